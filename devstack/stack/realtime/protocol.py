"""Phoenix channel frames as Supabase Realtime speaks them.

vsn 1.0.0 (realtime-py, older supabase-js): JSON objects
``{"event","payload","topic","ref","join_ref"}``.
vsn 2.0.0 (supabase-js' default): JSON arrays ``[join_ref, ref, topic, event, payload]``,
plus binary "user broadcast push" frames for broadcasts (kind 3). The server answers a
2.0.0 client with JSON arrays only; its decoder accepts text frames for every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ProtocolError

VSN_1 = "1.0.0"
VSN_2 = "2.0.0"
SUPPORTED_VSN = (VSN_1, VSN_2)

MAX_FRAME_BYTES = 256 * 1024  # largest client frame handled (bytes); bigger ones get an error
MAX_TOPIC_CHARS = 255  # longest topic accepted (characters)

KIND_USER_BROADCAST_PUSH = 3
BINARY_ENCODING_JSON = 1


@dataclass(slots=True)
class Frame:
    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None


def _ref(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError("ref and join_ref must be strings or null")


def decode_text(text: str) -> Frame:
    """A text frame of either version → Frame; ProtocolError when it is not one."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("frame is not valid JSON") from None
    if isinstance(data, dict):
        topic, event, payload = data.get("topic"), data.get("event"), data.get("payload", {})
        ref, join_ref = data.get("ref"), data.get("join_ref")
    elif isinstance(data, list) and len(data) == 5:
        join_ref, ref, topic, event, payload = data
    else:
        raise ProtocolError("frame must be a JSON object with topic, event, payload and ref")
    if not isinstance(topic, str) or not topic or len(topic) > MAX_TOPIC_CHARS:
        raise ProtocolError(f"topic must be a string of 1 to {MAX_TOPIC_CHARS} characters")
    if not isinstance(event, str) or not event:
        raise ProtocolError("event must be a non-empty string")
    if payload is None:
        payload = {}
    return Frame(topic=topic, event=event, payload=payload, ref=_ref(ref), join_ref=_ref(join_ref))


def decode_binary(data: bytes) -> Frame:
    """supabase-js 2.0.0's binary broadcast push → a ``broadcast`` Frame."""
    if len(data) < 7 or data[0] != KIND_USER_BROADCAST_PUSH:
        raise ProtocolError("unsupported binary frame")
    jl, rl, tl, el, ml, enc = data[1], data[2], data[3], data[4], data[5], data[6]
    off = 7
    end = off + jl + rl + tl + el + ml
    if end > len(data):
        raise ProtocolError("truncated binary frame")
    try:
        join_ref = data[off : off + jl].decode() or None
        off += jl
        ref = data[off : off + rl].decode() or None
        off += rl
        topic = data[off : off + tl].decode()
        off += tl
        event = data[off : off + el].decode()
        off += el
        meta = orjson.loads(data[off : off + ml]) if ml else {}
        off += ml
        body = data[off:]
        user_payload: Any = orjson.loads(body) if enc == BINARY_ENCODING_JSON else None
    except (UnicodeDecodeError, orjson.JSONDecodeError):
        raise ProtocolError("malformed binary frame") from None
    if enc != BINARY_ENCODING_JSON:
        raise ProtocolError("binary broadcast payloads are not supported; send JSON")
    if not topic:
        raise ProtocolError("binary frame without topic")
    payload: dict[str, Any] = {"type": "broadcast", "event": event, "payload": user_payload}
    if isinstance(meta, dict):
        payload.update({k: v for k, v in meta.items() if k == "persist"})
    return Frame(topic=topic, event="broadcast", payload=payload, ref=ref, join_ref=join_ref)


def encode(
    vsn: str, topic: str, event: str, payload: Any, ref: str | None = None, join_ref: str | None = None
) -> str:
    if vsn == VSN_2:
        return orjson.dumps([join_ref, ref, topic, event, payload]).decode()
    return orjson.dumps(
        {"event": event, "payload": payload, "ref": ref, "topic": topic, "join_ref": join_ref}
    ).decode()


def encode_change(vsn: str, topic_json: str, ids_json: str, data_json: str) -> str:
    """A postgres_changes frame from pre-encoded parts: ``data`` is encoded once per
    change and shared by every subscriber, only topic and ids differ."""
    if vsn == VSN_2:
        return f'[null,null,{topic_json},"postgres_changes",{{"ids":{ids_json},"data":{data_json}}}]'
    return (
        '{"event":"postgres_changes","payload":{"ids":'
        + ids_json
        + ',"data":'
        + data_json
        + '},"ref":null,"topic":'
        + topic_json
        + "}"
    )


def reply(vsn: str, frame: Frame, status: str, response: Any) -> str:
    return encode(
        vsn,
        frame.topic,
        "phx_reply",
        {"status": status, "response": response},
        ref=frame.ref,
        join_ref=frame.join_ref,
    )
