"""``power_operation``: power servers on or off, or restart them, through Redfish, and wait
for the confirmed state.

Steps:

===========  ========  ===================================================================
step         priority  resumable
===========  ========  ===================================================================
preflight    100       yes: reads the servers and opens their credentials
apply_power  50        on / off: yes (idempotent: a server already in the state is a
                       success that says so); restarts: **no** (a second run would
                       restart the host again)
===========  ========  ===================================================================

Per server the result (task result and ``checkpoint.servers``) says whether anything
changed, the confirmed state and what was done. A graceful request the OS ignores ends
in ``OperationTimedOut`` naming the remedy (force it), not in a generic timeout.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..jobparams import PowerOperationParams
from ..steps import JobHandler, Progress, StepContext, StepSpec, step
from ..targets.errors import OperationTimedOut
from ..targets.redfish import RedfishClient
from ..vocabulary import JobType
from . import register
from ._dell import (
    call,
    each_server,
    open_servers,
    params_of,
    per_server,
    raise_failures,
    time_scale,
    upsert_inventory,
    wait,
)
from ._replication_gate import TAKES_HOST_DOWN_POWER, gate_servers, skipped_servers

# job action -> RedfishClient.power action
ACTIONS = {
    "on": "on",
    "graceful_shutdown": "graceful_shutdown",
    "force_off": "off",
    "graceful_restart": "graceful_restart",
    "force_restart": "reset",
    "power_cycle": "cycle",
}
IDEMPOTENT = {"on", "graceful_shutdown", "force_off"}
_DB_POWER = {"On": "on", "Off": "off", "PoweringOn": "powering_on", "PoweringOff": "powering_off"}


async def power_one(
    ctx: StepContext, c: RedfishClient, action: str, *, wait_state: bool = True, budget: float | None = None
) -> dict[str, Any]:
    """One power action on one BMC, confirmed through ``ctx.wait_for``. ``action`` is a
    RedfishClient action (on, off, graceful_shutdown, reset, graceful_restart, cycle)."""
    res = await call(c.power, action, wait=False)
    out = {"action": action, "changed": res.changed, "state": res.state, "message": res.message}
    if not res.changed or not wait_state:
        return out
    restart = action in ("reset", "graceful_restart", "cycle") and "instead" not in res.message
    final = "Off" if action in ("off", "graceful_shutdown") else "On"
    dell = await call(lambda: c.dell) if restart else None
    seen = {"left_on": False}

    async def probe() -> Progress:
        state = await call(c.power_state)
        if restart:
            if state != "On":
                seen["left_on"] = True
            elif not seen["left_on"] and dell is not None:
                # the off phase can be shorter than a poll; the host in POST proves the restart
                if (await call(dell.lc_status)).server_status == "InPOST":
                    seen["left_on"] = True
                    return Progress(False, (state, True))
            return Progress(seen["left_on"] and state == "On", (state, seen["left_on"]))
        return Progress(state == final, state)

    hint = (
        "the OS may be ignoring the ACPI request; use force_off / force_restart to force it"
        if action in ("graceful_shutdown", "graceful_restart")
        else None
    )
    prog = await wait(
        ctx,
        probe,
        what=f"{c.target}: power {action}",
        budget=budget if budget is not None else c.timeouts.power,
        on_stall=lambda why: OperationTimedOut(
            f"state not confirmed: {why}", target=c.target, operation=f"power {action}", hint=hint
        ),
    )
    out["state"] = prog.marker[0] if isinstance(prog.marker, tuple) else (prog.marker or final)
    out["message"] = (
        "restarted; host is On" if restart else (res.message.replace(" (not waited)", "") or f"now {final}")
    )
    return out


@register
class PowerOperationHandler(JobHandler):
    job_type = JobType.POWER_OPERATION

    def validate(self, job: dict[str, Any]) -> None:
        params_of(job, PowerOperationParams)

    def plan(self, job: dict[str, Any]) -> list[StepSpec]:
        action = (job.get("params") or {}).get("action")
        return [
            replace(s, resumable=action in IDEMPOTENT) if s.name == "apply_power" else s
            for s in self.declared()
        ]

    @step(100, resumable=True)
    async def preflight(self, ctx: StepContext) -> dict[str, Any]:
        p = params_of(ctx.job, PowerOperationParams)
        # every credential opens before any server is touched
        servers, _ = await open_servers(ctx, p.server_ids)
        if p.action in TAKES_HOST_DOWN_POWER:  # storage hosts whose replication lags (_replication_gate.py)
            await gate_servers(ctx, servers)
        return {"servers": [s["name"] for s in servers], "action": p.action}

    @step(50, resumable=False)
    async def apply_power(self, ctx: StepContext) -> dict[str, Any]:
        # a server done before an interruption is not touched again (on/off only: restarts never resume)
        p = params_of(ctx.job, PowerOperationParams)
        servers, eps = await open_servers(ctx, p.server_ids)
        states = []

        async def apply(s: dict[str, Any], c: RedfishClient) -> dict[str, Any]:
            r = await power_one(
                ctx, c, ACTIONS[p.action], wait_state=p.wait_for_state, budget=p.timeout_s / time_scale()
            )
            states.append(
                {"server_id": str(s["id"]), "facts": {"power_state": _DB_POWER.get(r["state"], "unknown")}}
            )
            return r

        failures = await each_server(ctx, servers, eps, apply, skip=skipped_servers(ctx))
        if states:
            await upsert_inventory(ctx, states)
        raise_failures(failures, len(servers))
        done = per_server(ctx)
        return {
            "changed": sum(1 for v in done.values() if v.get("changed")),
            "unchanged": sum(1 for v in done.values() if v.get("ok") and not v.get("changed")),
        }
