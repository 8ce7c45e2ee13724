"""Errors of the REST layer, each carrying PostgREST's HTTP status and error code.

Every failure a request can hit is one of these; the service turns it into PostgREST's
``{code, message, details, hint}`` body. Nothing else (and never a traceback) reaches a
response.
"""

from __future__ import annotations

from typing import Any


class RestError(Exception):
    """Root of the REST layer's errors: a request that cannot be answered as asked."""

    status = 400
    code = "PGRST000"

    def __init__(
        self,
        message: str,
        details: Any = None,
        hint: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.details = details
        self.hint = hint
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}


class ParseError(RestError):
    """The query string or a header could not be parsed (PostgREST PGRST100)."""

    status = 400
    code = "PGRST100"


class InvalidBody(RestError):
    """The request body is not the JSON the endpoint needs (PGRST102)."""

    status = 400
    code = "PGRST102"


class RangeNotSatisfiable(RestError):
    """A Range header (or limit/offset) that selects nothing."""

    status = 416
    code = "PGRST103"


class UnsupportedMediaType(RestError):
    """Content-Type other than JSON (PGRST107)."""

    status = 415
    code = "PGRST107"


class NotAcceptable(RestError):
    """Accept header asks for a representation this layer does not produce (PGRST107)."""

    status = 406
    code = "PGRST107"


class SchemaNotExposed(RestError):
    """Accept-Profile/Content-Profile names a schema that is not exposed (PGRST106)."""

    status = 406
    code = "PGRST106"


class TableNotFound(RestError):
    """No such table or view in the schema cache (PGRST205)."""

    status = 404
    code = "PGRST205"


class FunctionNotFound(RestError):
    """No function with these named arguments in the schema cache (PGRST202)."""

    status = 404
    code = "PGRST202"


class AmbiguousFunction(RestError):
    """More than one overload fits the named arguments (PGRST203)."""

    status = 300
    code = "PGRST203"


class UnknownColumn(RestError):
    """A filter, order or select names a column the relation does not have (42703)."""

    status = 400
    code = "42703"


class UnknownBodyColumn(RestError):
    """A write names a column the table does not have (PGRST204)."""

    status = 400
    code = "PGRST204"


class NotImplementedFeature(RestError):
    """A PostgREST feature outside the supported subset (PGRST127), e.g. embedding."""

    status = 400
    code = "PGRST127"


class NoRelationship(RestError):
    """No foreign-key relationship between a resource and one it embeds (PGRST200)."""

    status = 400
    code = "PGRST200"


class AmbiguousRelationship(RestError):
    """More than one relationship fits an embedding; details lists them (PGRST201)."""

    status = 300
    code = "PGRST201"


class NotEmbedded(RestError):
    """A filter, order or limit names a resource the select does not embed (PGRST108)."""

    status = 400
    code = "PGRST108"


class RelatedOrderNotToOne(RestError):
    """order=rel(col) where rel is not a to-one embedding (PGRST118)."""

    status = 400
    code = "PGRST118"


class AggregatesNotAllowed(RestError):
    """Aggregate functions in select, off as in PostgREST's default and Supabase's (PGRST123)."""

    status = 400
    code = "PGRST123"


class SingularityError(RestError):
    """Single-object Accept but not exactly one row (PGRST116)."""

    status = 406
    code = "PGRST116"


class MethodNotAllowed(RestError):
    status = 405
    code = "PGRST117"


class JWTRejected(RestError):
    """Missing, malformed, forged or expired token (PGRST301/PGRST303)."""

    status = 401
    code = "PGRST301"


class BodyTooLarge(RestError):
    status = 413
    code = "PGRST413"


class Unavailable(RestError):
    """The database could not be reached (PGRST001)."""

    status = 503
    code = "PGRST001"


class DatabaseError(RestError):
    """An error raised by Postgres, mapped to an HTTP status the way PostgREST does."""


# PostgREST's SQLSTATE -> HTTP status table (exact codes first, then classes).
_EXACT = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
    "40001": 409,
}
_CLASS = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 413,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


def status_for_sqlstate(sqlstate: str, role: str) -> int:
    if sqlstate == "42501":
        # insufficient privilege: PostgREST answers 401 to anonymous callers, 403 otherwise
        return 401 if role == "anon" else 403
    if sqlstate in _EXACT:
        return _EXACT[sqlstate]
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        # RAISE ... USING ERRCODE = 'PT4xx' sets the status, as in PostgREST
        return int(sqlstate[2:])
    return _CLASS.get(sqlstate[:2], 400)
