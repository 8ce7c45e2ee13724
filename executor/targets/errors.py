"""Errors raised by rackpilot's target clients (iDRAC/Redfish, OME, catalogs).

One root, `TargetError`, and one class per failure an operator must tell apart. Every
message names the target and the operation and says what to do next; none carries a
password, token or session key.
"""

from __future__ import annotations

from .. import ExecutorError


class TargetError(ExecutorError):
    """Root of every target-client failure.

    `target` is the address the client talks to, `operation` the client call that failed,
    `message_id` the vendor message id when the device sent one (e.g. `RAC0218`),
    `hint` what an operator can do about it.
    """

    hint = ""

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        operation: str | None = None,
        message_id: str | None = None,
        hint: str | None = None,
    ):
        self.detail = message
        self.target = target
        self.operation = operation
        self.message_id = message_id
        if hint is not None:
            self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ": ".join(x for x in (self.target, self.operation) if x)
        text = f"{where}: {self.detail}" if where else self.detail
        if self.message_id:
            text += f" [{self.message_id}]"
        if self.hint:
            text += f" ({self.hint})"
        return text


class TargetUnreachable(TargetError):
    """No answer at the network level: refused, reset, timed out, DNS."""

    hint = "check the address, network path and that the BMC is powered; an iDRAC reset takes minutes"


class AuthenticationFailed(TargetError):
    """The device refused the credentials (HTTP 401/403)."""

    hint = "check the stored credentials for this target"


class SessionLimitReached(TargetError):
    """iDRAC RAC0218: all Redfish sessions are in use (usually leaked by another tool)."""

    hint = (
        "another tool holds every Redfish session; its sessions expire after ~30 min idle, "
        "or delete them in the iDRAC UI"
    )


class LifecycleControllerNotReady(TargetError):
    """The Lifecycle Controller stayed busy or not ready (after boots/resets, or stuck)."""

    hint = "wait for POST to finish; if it never becomes Ready, clear the job queue or reset the iDRAC"


class PendingConfiguration(TargetError):
    """iDRAC LC068: pending attribute changes or a configuration job block the request."""

    hint = "apply or cancel the pending changes, or clear the job queue, then retry"


class JobAlreadyRunning(TargetError):
    """iDRAC RAC0679: another job operation is running."""

    hint = "wait for the running job, or clear stale entries from the job queue, then retry"


class JobFailed(TargetError):
    """A device job (Dell job, task, OME job) ended Failed or CompletedWithErrors."""

    def __init__(self, message: str, *, job_id: str | None = None, state: str | None = None, **kw):
        self.job_id = job_id
        self.state = state
        super().__init__(message, **kw)


class JobStuck(TargetError):
    """A job made no progress for its stall budget, or did not finish within its timeout."""

    hint = "the job may be wedged: clear the job queue (escalating to force-clear) or reset the iDRAC"

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        state: str | None = None,
        percent: int | None = None,
        **kw,
    ):
        self.job_id = job_id
        self.state = state
        self.percent = percent
        super().__init__(message, **kw)


class JobQueueStuck(JobStuck):
    """Entries stayed in the Dell job queue even after JID_CLEARALL_FORCE."""

    hint = "reset the iDRAC, then clear the job queue again"


class OperationTimedOut(TargetError):
    """A state the client waits for (power state, iDRAC back after reset) was not reached in time."""


class VerificationFailed(TargetError):
    """A target reported an update done, but reads back other versions than it promised
    (an ESXi host after its upgrade, a server's firmware after a rollout)."""


class FirmwareVerificationFailed(VerificationFailed):
    """The update reported success but the installed firmware is not the target version."""

    hint = (
        "the device reported success without installing the package; re-run the update or check the package"
    )


class TLSConfigurationError(TargetError):
    """The TLS choice for a target is missing, contradictory, or the handshake failed."""

    hint = "give the target a CA bundle, or set insecure=True explicitly for self-signed certificates"


class TargetServerError(TargetError):
    """The device kept answering HTTP 5xx after the retries allowed."""

    hint = "the BMC service is failing; retry later or reset the iDRAC"


class RequestRejected(TargetError):
    """The device refused a request for a reason not covered by a more specific class."""


class UnsupportedTarget(TargetError):
    """The device lacks a capability the operation needs (e.g. no Dell OEM surface)."""


class CatalogError(TargetError):
    """A firmware catalog could not be read or parsed."""


__all__ = [
    "TargetError",
    "TargetUnreachable",
    "AuthenticationFailed",
    "SessionLimitReached",
    "LifecycleControllerNotReady",
    "PendingConfiguration",
    "JobAlreadyRunning",
    "JobFailed",
    "JobStuck",
    "JobQueueStuck",
    "OperationTimedOut",
    "VerificationFailed",
    "FirmwareVerificationFailed",
    "TLSConfigurationError",
    "TargetServerError",
    "RequestRejected",
    "UnsupportedTarget",
    "CatalogError",
]
