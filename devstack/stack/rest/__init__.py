"""PostgREST-compatible REST layer of the local stack (``/rest/v1``)."""

from .service import RestService

__all__ = ["RestService"]
