"""``replication_sync``: replicate ZFS datasets from a source host to a replica over SSH,
incrementally and resumably, with retention that never breaks the chain.

Steps (priority order):

==========  =========  =================================================================
step        resumable  what it does
==========  =========  =================================================================
prepare     yes        reads the pairs, checks every name, takes each pair for this job
                       (``replication_begin``: a pair another unfinished job holds is
                       skipped, so two syncs of one pair never run at once) and picks the
                       new snapshot's name ``<prefix>_<UTC time>``
snapshot    yes        takes that snapshot on each source (not again if it exists)
send        yes        per pair: resumes an interrupted receive from its token, else sends
                       from the newest common snapshot or bookmark (``-I`` / ``-i``), or in
                       full only to a destination that does not exist and when the pair
                       (``allow_full_send``) or the job (``mode: full``) allows it; then
                       holds the new common snapshot on both sides, bookmarks it on the
                       source, releases the previous hold, and records bytes, duration,
                       lag and last success on the pair. Abortable: a cancel kills the
                       stream (the receive keeps what arrived, resumable)
retention   yes        per pair and side: keep-last-N and the grid, only rackpilot's own
                       snapshots, never the newest common one, a held one, or (source) one
                       not yet replicated
finish      yes        fails the job naming each pair that failed, with its error class
release     cleanup    gives the pairs back, stops the job's ssh-agent and every ssh child
==========  =========  =================================================================

``dry_run: true`` runs ``prepare`` and ``dry_run`` only: what would be sent (kind, base,
estimated bytes) and pruned, per pair, changing nothing.

Reaching the hosts: the pair's ``credential_set_id`` is one sealed credential whose
envelope holds ``username``, ``private_key`` and ``host_keys`` (known_hosts lines pinning
both hosts' keys; sealed with ``encrypt-credentials``, the two are the JSON object the admin
gives as the secret: :func:`ssh_fields`), and whose endpoints name both hosts as
``{"scheme": "ssh", "host": H, "port": P, "tls": {"known_hosts": "sealed"}}``: the secret
is released only to those (:mod:`executor.binding`), and only the sealed keys are trusted.
``source_host`` / ``target_host`` are ``host`` or ``host:port``.

Errors an operator acts on, each its own class (``executor.targets.zfs`` and ``.ssh``):
DestinationDiverged, DatasetBusy, NoSpace, StreamBroken, NoCommonBase, HostKeyMismatch.
None of them destroys anything.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..jobparams import ReplicationSyncParams
from ..replication_plan import GridError, lag_seconds, newest_common, parse_grid, plan_prune, plan_send
from ..steps import HandlerError, JobHandler, StepContext, StepSpec, cleanup_step, step
from ..targets import zfs
from ..targets.errors import TargetError
from ..targets.ssh import (
    SEALED_TRUST,
    HostKeyMismatch,
    RelayResult,
    SshEndpoint,
    SshStack,
    StreamBroken,
    classify_transport,
    parse_host_keys,
)
from ..vocabulary import JobType, TaskStatus, TaskTargetKind
from . import register

log = logging.getLogger("rackpilot.executor.replication_sync")

PAIR_COLUMNS = (
    "id,site_id,name,source_host,source_dataset,target_host,target_dataset,credential_set_id,"
    "retention_snapshots,retention_grid,max_lag_seconds,bandwidth_limit_mbit,allow_full_send,"
    "snapshot_prefix,enabled"
)
MAX_PASSES = 3  # sends per pair per run: a resume, then what is newer (count)


class ReplicationHandlerError(HandlerError):
    """Root of the handler's own failures (the target errors keep their classes)."""


class PairsFailed(ReplicationHandlerError):
    """One or more pairs failed; the message names each with its error class."""


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(f"ssh://{address.strip()}")
    if not parts.hostname or parts.username or parts.path:
        raise ReplicationHandlerError(f"{address!r} is not host or host:port")
    try:
        return parts.hostname, int(parts.port or 22)
    except ValueError:
        raise ReplicationHandlerError(f"bad port in {address!r}") from None


def release_secret(cred: Any, host: str, port: int, name: str) -> dict[str, str]:
    """The credential's secret for ``host:port``, only if its sealed endpoints allow it (pinned
    host keys: trust ``known_hosts: sealed``)."""
    if hasattr(cred, "release"):
        from ..binding import Target

        return ssh_fields(
            dict(
                cred.release(
                    Target.of(
                        f"ssh://{host}:{port}" if ":" not in host else f"ssh://[{host}]:{port}",
                        {"known_hosts": SEALED_TRUST},
                        scheme="ssh",
                        port=port,
                        name=name,
                    )
                )
            )
        )
    return ssh_fields({str(k): str(v) for k, v in dict(cred).items()})  # an executor without sealed endpoints


def ssh_fields(secret: dict[str, Any]) -> dict[str, Any]:
    """``encrypt-credentials`` seals the admin's secret as ``password``: for an SSH login that
    secret is a JSON object ``{"private_key": ..., "host_keys": ...}`` (docs/replication.md),
    whose two fields are taken from it here. Fields sealed directly win."""
    if "private_key" in secret or not str(secret.get("password") or "").lstrip().startswith("{"):
        return secret
    try:
        inner = json.loads(secret["password"])
    except ValueError:
        return secret
    if not isinstance(inner, dict):
        return secret
    out = {k: v for k, v in secret.items() if k != "password"}
    for key in ("private_key", "host_keys"):
        if isinstance(inner.get(key), str):
            out[key] = inner[key]
    return out


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@register
class ReplicationSyncHandler(JobHandler):
    job_type = JobType.REPLICATION_SYNC

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = Path(
            state_dir
            or os.environ.get("RACKPILOT_STATE_DIR")
            or Path(tempfile.gettempdir()) / "rackpilot-executor"
        )
        self._ssh: SshStack | None = None
        self._keys: dict[str, str] = {}  # credential id -> public key file in the agent
        self._pairs: dict[str, dict[str, Any]] = {}
        self._errors: dict[str, BaseException] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> ReplicationSyncHandler:
        return cls(Path(settings.state_dir))

    # --- plan -------------------------------------------------------------------------------------
    def validate(self, job: dict[str, Any]) -> None:
        try:
            ReplicationSyncParams.model_validate(job.get("params") or {})
        except ValueError as exc:
            raise ReplicationHandlerError(f"invalid replication_sync params: {exc}") from None

    def plan(self, job: dict[str, Any]) -> list[StepSpec]:
        dry = bool((job.get("params") or {}).get("dry_run"))
        wanted = (
            {"prepare", "dry_run", "release"}
            if dry
            else {"prepare", "snapshot", "send", "retention", "finish", "release"}
        )
        return [s for s in self.declared() if s.name in wanted]

    @staticmethod
    def _params(ctx: StepContext) -> ReplicationSyncParams:
        return ReplicationSyncParams.model_validate(ctx.params)

    # --- control plane --------------------------------------------------------------------------
    @staticmethod
    async def _pair_task(
        ctx: StepContext,
        pair: dict[str, Any],
        status: TaskStatus,
        *,
        progress: int | None = None,
        details: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        # pair rows carry no seq: every pair's task is written with seq 0
        await ctx.update_task(
            TaskTargetKind.REPLICATION_PAIR,
            pair,
            status,
            progress=progress,
            details=details,
            error=error,
            seq=pair.get("seq", 0),
        )

    @staticmethod
    async def _record(ctx: StepContext, pair: dict[str, Any], status: str, kind: str, **kw: Any) -> None:
        await ctx.rpc(
            "replication_record",
            {
                "p_pair_id": pair["id"],
                "p_status": status,
                "p_kind": kind,
                "p_bytes": kw.get("bytes", 0),
                "p_duration_ms": int(kw.get("duration_ms", 0)),
                "p_snapshot": kw.get("snapshot"),
                "p_snapshot_created_at": kw.get("snapshot_created_at"),
                "p_lag_seconds": kw.get("lag_seconds"),
                "p_error_class": kw.get("error_class"),
                "p_error": kw.get("error"),
                "p_details": kw.get("details") or {},
            },
        )

    async def _load_pairs(self, ctx: StepContext) -> list[dict[str, Any]]:
        if not self._pairs:
            params = self._params(ctx)
            ids = [str(x) for x in params.replication_pair_ids]
            rows = {str(r["id"]): r for r in await ctx.select("replication_pairs", PAIR_COLUMNS, id=ids)}
            for seq, pid in enumerate(ids):
                if pid in rows:
                    self._pairs[pid] = dict(rows[pid], seq=seq, id=pid)
        return [
            self._pairs[p] for p in (ctx.checkpoint.get("order") or list(self._pairs)) if p in self._pairs
        ]

    def _state(self, ctx: StepContext) -> dict[str, dict[str, Any]]:
        return ctx.checkpoint.setdefault("pairs", {})

    def _fail(self, ctx: StepContext, pair: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        st = self._state(ctx)[pair["id"]]
        st.update(state="failed", error_class=type(exc).__name__, error=str(exc)[:2000])
        self._errors[pair["id"]] = exc
        log.warning("pair %s failed: %s: %s", pair["name"], type(exc).__name__, exc)
        return st

    # --- ssh --------------------------------------------------------------------------------------
    async def _stack(self) -> SshStack:
        if self._ssh is None:
            self._ssh = SshStack(self.state_dir)
            await self._ssh.start()
        return self._ssh

    async def _endpoint(self, ctx: StepContext, pair: dict[str, Any], side: str) -> SshEndpoint:
        address = str(pair["source_host" if side == "source" else "target_host"])
        host, port = _host_port(address)
        cred_id = pair.get("credential_set_id")
        if not cred_id:
            raise ReplicationHandlerError(f"pair {pair['name']} has no credential set")
        cred = await ctx.credentials(str(cred_id))
        secret = release_secret(cred, host, port, f"{pair['name']} {side}")
        keys = parse_host_keys(secret.get("host_keys", ""), host, port)
        if not keys:
            raise HostKeyMismatch(
                f"the credential pins no host key for {address}; it is not connected to",
                target=f"{side} {address}",
            )
        if "private_key" not in secret:
            raise ReplicationHandlerError(f"the credential of pair {pair['name']} holds no private_key")
        ssh = await self._stack()
        if str(cred_id) not in self._keys:
            self._keys[str(cred_id)] = await ssh.add_key(secret["private_key"])
        user = secret.get("username") or getattr(cred, "username", "") or ""
        ep = SshEndpoint(host, port, user, keys, name=f"{side} {address}", identity=self._keys[str(cred_id)])
        ssh.pin(ep)
        return ep

    async def _hosts(self, ctx: StepContext, pair: dict[str, Any]) -> tuple[zfs.ZfsHost, zfs.ZfsHost]:
        ssh = await self._stack()
        return (
            zfs.ZfsHost(ssh, await self._endpoint(ctx, pair, "source")),
            zfs.ZfsHost(ssh, await self._endpoint(ctx, pair, "target")),
        )

    def _prefix(self, ctx: StepContext, pair: dict[str, Any]) -> str:
        params = self._params(ctx)
        if "snapshot_prefix" in params.model_fields_set:
            return zfs.prefix_name(params.snapshot_prefix)
        return zfs.prefix_name(pair.get("snapshot_prefix") or params.snapshot_prefix)

    # --- steps ------------------------------------------------------------------------------------
    @step(100, resumable=True)
    async def prepare(self, ctx: StepContext) -> dict[str, Any]:
        params = self._params(ctx)
        pairs = await self._load_pairs(ctx)
        missing = [str(x) for x in params.replication_pair_ids if str(x) not in self._pairs]
        if missing:
            raise ReplicationHandlerError(f"replication pair(s) {missing} do not exist (any more)")
        ctx.checkpoint["order"] = [p["id"] for p in pairs]
        ctx.checkpoint.setdefault("started", time.time())
        states = self._state(ctx)
        for pair in pairs:
            st = states.setdefault(pair["id"], {"name": pair["name"], "state": "ready"})
            if st["state"] != "ready":
                continue
            try:
                zfs.dataset_name(pair["source_dataset"])
                zfs.dataset_name(pair["target_dataset"])
                parse_grid(pair.get("retention_grid"))
                st["snapshot"] = st.get("snapshot") or zfs.new_snapshot_short(
                    self._prefix(ctx, pair), datetime.fromtimestamp(ctx.checkpoint["started"], UTC)
                )
            except (zfs.DatasetNameError, GridError) as exc:
                self._fail(ctx, pair, exc)
                await self._pair_task(ctx, pair, TaskStatus.FAILED, error=str(exc))
                await self._record(
                    ctx, pair, "failed", "none", error_class=type(exc).__name__, error=str(exc)
                )
                continue
            if params.dry_run:
                continue
            got = await ctx.rpc("replication_begin", {"p_pair_id": pair["id"]})
            if isinstance(got, dict) and not got.get("ok", False):
                st.update(state="skipped", holder=got.get("holder"))
                why = f"job {got.get('holder')} is syncing this pair"
                await self._pair_task(ctx, pair, TaskStatus.SKIPPED, details={"reason": why})
                await self._record(ctx, pair, "skipped", "none", details={"reason": why})
                continue
            st["taken"] = True
            await self._pair_task(ctx, pair, TaskStatus.RUNNING, progress=0)
        return {
            p: {k: v for k, v in s.items() if k in ("state", "snapshot", "error_class")}
            for p, s in states.items()
        }

    @step(90, resumable=True)
    async def snapshot(self, ctx: StepContext) -> dict[str, Any]:
        taken = {}
        for pair in await self._load_pairs(ctx):
            st = self._state(ctx)[pair["id"]]
            if st["state"] != "ready":
                continue
            name = f"{pair['source_dataset']}@{st['snapshot']}"
            try:
                src, _ = await self._hosts(ctx, pair)
                snaps = await src.snapshots(pair["source_dataset"])
                if snaps is None:
                    raise zfs.DatasetMissing(
                        f"{pair['source_dataset']} does not exist", target=src.display, operation="zfs list"
                    )
                if not any(s.name == name for s in snaps):
                    await src.snapshot(name)
                taken[pair["name"]] = name
            except (TargetError, ReplicationHandlerError) as exc:
                st = self._fail(ctx, pair, exc)
                await self._pair_task(
                    ctx, pair, TaskStatus.FAILED, error=f"{st['error_class']}: {st['error']}"
                )
                await self._record(
                    ctx, pair, "failed", "none", error_class=st["error_class"], error=st["error"]
                )
        return {"snapshots": taken}

    @step(80, resumable=True, abortable=True)
    async def send(self, ctx: StepContext) -> dict[str, Any]:
        out = {}
        for pair in await self._load_pairs(ctx):
            st = self._state(ctx)[pair["id"]]
            if st["state"] != "ready":
                continue
            t0 = time.monotonic()
            try:
                result = await self._sync_pair(ctx, pair)
            except (TargetError, ReplicationHandlerError) as exc:
                st = self._fail(ctx, pair, exc)
                await self._pair_task(
                    ctx, pair, TaskStatus.FAILED, error=f"{st['error_class']}: {st['error']}"
                )
                await self._record(
                    ctx,
                    pair,
                    "failed",
                    st.get("kind") or "none",
                    bytes=st.get("bytes", 0),
                    duration_ms=(time.monotonic() - t0) * 1000,
                    error_class=st["error_class"],
                    error=st["error"],
                )
                continue
            st.update(
                state="sent",
                replicated=result["snapshot"],
                **{k: result[k] for k in ("kind", "bytes", "lag_seconds")},
            )
            await self._record(
                ctx,
                pair,
                "succeeded",
                result["kind"],
                bytes=result["bytes"],
                duration_ms=result["duration_s"] * 1000,
                snapshot=result["snapshot"],
                snapshot_created_at=result["snapshot_created_at"],
                lag_seconds=result["lag_seconds"],
                details={"passes": result["passes"]},
            )
            await self._pair_task(ctx, pair, TaskStatus.RUNNING, progress=80, details=result)
            out[pair["name"]] = result
        return out

    async def _sync_pair(self, ctx: StepContext, pair: dict[str, Any]) -> dict[str, Any]:
        params = self._params(ctx)
        src, dst = await self._hosts(ctx, pair)
        sds, tds = pair["source_dataset"], pair["target_dataset"]
        allow_full = bool(pair.get("allow_full_send")) or params.mode == "full"
        mbit = pair.get("bandwidth_limit_mbit")
        bwlimit = float(mbit) * 125_000 if mbit else None
        total, passes, kinds, t0 = 0, [], [], time.monotonic()
        common = None
        for _ in range(MAX_PASSES):
            token = await dst.resume_token(tds) if params.resume else None
            if token:
                kind, argv, what = "resume", zfs.cmd_send_resume(token), "resume"
            else:
                src_snaps = await src.snapshots(sds)
                if src_snaps is None:
                    raise zfs.DatasetMissing(
                        f"{sds} does not exist", target=src.display, operation="zfs list"
                    )
                dst_snaps = await dst.snapshots(tds)
                plan = plan_send(
                    src_snaps, dst_snaps, allow_full=allow_full, target_dataset=tds, source_dataset=sds
                )
                if plan.kind == "none":
                    common = plan.common
                    break
                assert plan.target is not None  # every plan but "none" names the snapshot it sends
                argv = zfs.cmd_send(
                    plan.target.name,
                    base=plan.base.name if plan.base else None,
                    intermediates=plan.intermediates,
                )
                kind, what = plan.kind, plan.reason
            moved = await self._relay(ctx, pair, src, dst, argv, bwlimit, base_bytes=total, what=what)
            total += moved
            passes.append({"kind": kind, "bytes": moved, "what": what})
            kinds.append(kind)
        else:
            raise ReplicationHandlerError(f"pair {pair['name']}: still not in sync after {MAX_PASSES} sends")
        if common is None:
            raise zfs.NoCommonBase("nothing in common after the send", target=dst.display, operation="verify")
        # the base of the next incremental: held on both sides, bookmarked on the source
        src_snaps = await src.snapshots(sds) or []
        common_src = next(
            (s for s in reversed(src_snaps) if s.guid == common.guid and s.kind == "snapshot"), None
        )
        common_dst = next(
            (s for s in reversed(await dst.snapshots(tds) or []) if s.guid == common.guid), None
        )
        if common_dst is None:
            raise zfs.DestinationDiverged(
                "the replica lost the common snapshot", target=dst.display, operation="verify"
            )
        await dst.hold(common_dst.name)
        if common_src is not None:
            await src.hold(common_src.name)
            bm = f"{sds}#{common_src.short}"
            if not any(s.name == bm for s in src_snaps):
                await src.bookmark(common_src.name, bm)
        now = time.time()
        lag = lag_seconds(common_dst.creation, now)
        return {
            "kind": kinds[0] if len(set(kinds)) == 1 else "+".join(kinds) if kinds else "none",
            "bytes": total,
            "passes": passes,
            "duration_s": round(time.monotonic() - t0, 3),
            "snapshot": common_dst.name,
            "snapshot_created_at": _when(common_dst.creation),
            "lag_seconds": int(lag) if lag is not None else None,
        }

    async def _relay(
        self,
        ctx: StepContext,
        pair: dict[str, Any],
        src: zfs.ZfsHost,
        dst: zfs.ZfsHost,
        argv: list[str],
        bwlimit: float | None,
        *,
        base_bytes: int,
        what: str,
    ) -> int:
        ssh = await self._stack()

        async def progress(moved: int, rate: float) -> None:
            await ctx.save_progress(
                {
                    "pair": pair["name"],
                    "what": what,
                    "bytes": base_bytes + moved,
                    "rate_bytes_s": round(rate),
                },
                force=False,
            )

        res: RelayResult = await ssh.relay(
            src.ep,
            argv,
            dst.ep,
            zfs.cmd_recv(pair["target_dataset"]),
            bwlimit=bwlimit,
            on_progress=progress,
            check=ctx.check_cancel,
        )
        if res.ok:
            return res.bytes
        raise self._stream_error(res, src, dst)

    @staticmethod
    def _stream_error(res: RelayResult, src: zfs.ZfsHost, dst: zfs.ZfsHost) -> Exception:
        """The one error a failed stream means: the transport's, the source's, the receive's."""
        for status, err, host in (
            (res.src_status, res.src_stderr, src),
            (res.dst_status, res.dst_stderr, dst),
        ):
            if status == 255 and ("host key" in err.lower() or "permission denied" in err.lower()):
                return classify_transport(err, host.ep, "zfs send | zfs receive")
        dst_low = res.dst_stderr.lower()
        if "partially received" in dst_low or "zfs send -t" in dst_low:
            return StreamBroken(
                f"the stream broke after {res.bytes} bytes; the replica kept them and the next run resumes",
                target=f"{src.display} -> {dst.display}",
                operation="zfs send | zfs receive",
            )
        if res.dst_status not in (0, None, 255) and res.dst_stderr.strip():
            failure = zfs.classify(res.dst_stderr, target=dst.display, operation="zfs receive")
            if not isinstance(failure, zfs.ZfsCommandFailed):
                return failure
        if res.src_status not in (0, None, 255) and res.src_stderr.strip():
            return zfs.classify(res.src_stderr, target=src.display, operation="zfs send")
        if res.dst_status not in (0, None, 255) and res.dst_stderr.strip():
            return zfs.classify(res.dst_stderr, target=dst.display, operation="zfs receive")
        return StreamBroken(
            f"the stream broke after {res.bytes} bytes (send exit {res.src_status}, receive exit "
            f"{res.dst_status}): {(res.src_stderr or res.dst_stderr).strip()[:300]}",
            target=f"{src.display} -> {dst.display}",
            operation="zfs send | zfs receive",
        )

    @step(70, resumable=True)
    async def retention(self, ctx: StepContext) -> dict[str, Any]:
        out = {}
        for pair in await self._load_pairs(ctx):
            st = self._state(ctx)[pair["id"]]
            if st["state"] != "sent":
                continue
            try:
                pruned = await self._prune_pair(ctx, pair, dry_run=False)
            except (TargetError, ReplicationHandlerError, GridError) as exc:
                st = self._fail(ctx, pair, exc)
                await self._pair_task(
                    ctx, pair, TaskStatus.FAILED, error=f"retention: {st['error_class']}: {st['error']}"
                )
                continue
            st["state"] = "done"
            await self._pair_task(
                ctx,
                pair,
                TaskStatus.COMPLETED,
                progress=100,
                details={k: st.get(k) for k in ("kind", "bytes", "replicated", "lag_seconds")} | pruned,
            )
            out[pair["name"]] = pruned
        return out

    async def _prune_pair(
        self, ctx: StepContext, pair: dict[str, Any], *, dry_run: bool, extra: zfs.Snap | None = None
    ) -> dict[str, Any]:
        params = self._params(ctx)
        src, dst = await self._hosts(ctx, pair)
        sds, tds = pair["source_dataset"], pair["target_dataset"]
        prefix = self._prefix(ctx, pair)
        keep_last = (
            params.keep_snapshots if params.keep_snapshots is not None else int(pair["retention_snapshots"])
        )
        grid = parse_grid(pair.get("retention_grid"))
        src_snaps = await src.snapshots(sds) or []
        dst_snaps = await dst.snapshots(tds) or []
        if extra is not None:  # dry run: as if the new snapshot were taken and replicated
            src_snaps = [*src_snaps, extra]
            dst_snaps = [
                *dst_snaps,
                zfs.Snap(f"{tds}@{extra.short}", extra.guid, extra.createtxg, extra.creation, "snapshot"),
            ]
        common = newest_common(src_snaps, dst_snaps)
        if common is None:
            return {"pruned": {}, "note": "no common snapshot: nothing is pruned"}
        now = time.time()

        def time_of(s: zfs.Snap) -> float:
            t = zfs.snapshot_time(s.short, prefix)
            return t.timestamp() if t else float(s.creation)

        result: dict[str, Any] = {"pruned": {}, "kept": {}}
        for side, host, snaps in (("target", dst, dst_snaps), ("source", src, src_snaps)):
            held = await self._held(host, snaps, prefix, common, extra, dry_run)
            common_txg = next((s.createtxg for s in snaps if s.guid == common.guid), None)
            plan = plan_prune(
                snaps,
                prefix=prefix,
                keep_last=keep_last,
                grid=grid,
                now=now,
                common_guid=common.guid,
                held=held,
                # on the source, snapshots newer than the common one are not replicated yet
                unreplicated_after=common_txg if side == "source" else None,
                time_of=time_of,
            )
            for s in plan.destroy:
                assert s.guid != common.guid and s.name not in held  # never the chain's base, never a hold
                if not dry_run:
                    await host.destroy(s.name)
            if side == "source" and not dry_run:
                await self._drop_dead_bookmarks(host, snaps, dst_snaps, prefix, common_txg or 0)
            result["pruned"][side] = [s.short for s in plan.destroy]
            result["kept"][side] = len(plan.keep)
            if not dry_run:
                await ctx.save_progress(
                    {"pair": pair["name"], "retention": side, "pruned": len(plan.destroy)}, force=False
                )
        result["common"] = common.short
        return result

    @staticmethod
    async def _held(
        host: zfs.ZfsHost,
        snaps: list[zfs.Snap],
        prefix: str,
        common: zfs.Snap,
        extra: zfs.Snap | None,
        dry_run: bool,
    ) -> set[str]:
        """Our snapshots on ``host`` that must stay: held by anyone else, or the common base
        held by us. Our hold on an older base is stale (the chain moved on) and released,
        unless ``dry_run``. ``extra``: the dry run's snapshot-to-be, not on the host."""
        ours = [
            s.name
            for s in snaps
            if s.kind == "snapshot"
            and s.short.startswith(prefix + "_")
            and (extra is None or s.guid != extra.guid)
        ]
        held = set()
        for name, tags in (await host.holds(ours)).items():
            guid = next(s.guid for s in snaps if s.name == name)
            if tags - {zfs.HOLD_TAG} or guid == common.guid:
                held.add(name)
            elif zfs.HOLD_TAG in tags and not dry_run:
                await host.release(name)
        return held

    @staticmethod
    async def _drop_dead_bookmarks(
        host: zfs.ZfsHost, snaps: list[zfs.Snap], dst_snaps: list[zfs.Snap], prefix: str, common_txg: int
    ) -> None:
        """The source's bookmarks of ours, older than the common snapshot, that the replica
        no longer has a snapshot for: dead ends no incremental send can start from."""
        dst_guids = {s.guid for s in dst_snaps if s.kind == "snapshot"}
        for b in snaps:
            if (
                b.kind == "bookmark"
                and b.short.startswith(prefix + "_")
                and b.guid not in dst_guids
                and b.createtxg < common_txg
            ):
                await host.destroy(b.name)

    @step(60, resumable=True)
    async def finish(self, ctx: StepContext) -> dict[str, Any]:
        states = self._state(ctx)
        failed = {p: s for p, s in states.items() if s["state"] == "failed"}
        summary = {s["name"]: s["state"] for s in states.values()}
        if not failed:
            return {"pairs": summary}
        if len(failed) == 1:
            pid, s = next(iter(failed.items()))
            exc = self._errors.get(pid)
            if isinstance(exc, Exception):
                raise exc
        raise PairsFailed(
            "; ".join(f"pair {s['name']}: {s['error_class']}: {s['error']}" for s in failed.values())
        )

    @step(50, resumable=True)
    async def dry_run(self, ctx: StepContext) -> dict[str, Any]:
        params = self._params(ctx)
        report: dict[str, Any] = {}
        for pair in await self._load_pairs(ctx):
            st = self._state(ctx)[pair["id"]]
            if st["state"] != "ready":
                report[pair["name"]] = {"state": st["state"], "error": st.get("error")}
                continue
            entry: dict[str, Any] = {"snapshot_to_take": f"{pair['source_dataset']}@{st['snapshot']}"}
            try:
                src, dst = await self._hosts(ctx, pair)
                sds, tds = pair["source_dataset"], pair["target_dataset"]
                token = await dst.resume_token(tds) if params.resume else None
                if token:
                    res = await src.ssh.run(
                        src.ep, zfs.cmd_send_resume(token, dry_run=True), operation="zfs send -n"
                    )
                    entry["resume"] = {"bytes_left": zfs.parse_send_size(res.stdout)}
                src_snaps = await src.snapshots(sds)
                if src_snaps is None:
                    raise zfs.DatasetMissing(
                        f"{sds} does not exist", target=src.display, operation="zfs list"
                    )
                dst_snaps = await dst.snapshots(tds)
                txg = max((s.createtxg for s in src_snaps), default=0) + 1
                new = zfs.Snap(f"{sds}@{st['snapshot']}", -1, txg, int(time.time()), "snapshot")
                plan = plan_send(
                    [*src_snaps, new],
                    dst_snaps,
                    allow_full=bool(pair.get("allow_full_send")) or params.mode == "full",
                    target_dataset=tds,
                    source_dataset=sds,
                )
                entry["send"] = plan.describe()
                newest = [s for s in src_snaps if s.kind == "snapshot"]
                if newest and plan.base is not None and newest[-1].guid != plan.base.guid:
                    entry["send"]["estimated_bytes_at_least"] = await src.send_size(
                        newest[-1].name, plan.base.name, plan.intermediates
                    )
                elif newest and plan.kind == "full":
                    entry["send"]["estimated_bytes_at_least"] = await src.send_size(
                        newest[-1].name, None, False
                    )
                entry["retention"] = await self._prune_pair(ctx, pair, dry_run=True, extra=new)
            except (TargetError, ReplicationHandlerError, GridError) as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["error_class"] = type(exc).__name__
            await self._record(
                ctx,
                pair,
                "failed" if "error" in entry else "succeeded",
                "dry_run",
                error_class=entry.get("error_class"),
                error=entry.get("error"),
                details=entry,
            )
            report[pair["name"]] = entry
        return report

    @cleanup_step(10)
    async def release(self, ctx: StepContext) -> dict[str, Any]:
        try:
            taken = [p for p, s in self._state(ctx).items() if s.get("taken")]
            if taken:
                await ctx.rpc("replication_end", {"p_pair_ids": taken})
            for pid, s in self._state(ctx).items():
                pair = self._pairs.get(pid)
                if pair is not None and s.get("taken") and s["state"] in ("ready", "sent"):
                    # interrupted (cancel, failure elsewhere): what arrived stays resumable
                    await self._pair_task(
                        ctx,
                        pair,
                        TaskStatus.CANCELLED if ctx.cancel_requested else TaskStatus.FAILED,
                        error="the job ended before this pair finished",
                    )
            return {"released": len(taken)}
        finally:
            if self._ssh is not None:
                self._ssh.close()
                self._ssh = None
                self._keys.clear()
