"""rackpilot executor: the on-prem service that does the privileged work for one site."""

__version__ = "0.1.0"


class ExecutorError(Exception):
    """Root of every error the executor raises on purpose."""
