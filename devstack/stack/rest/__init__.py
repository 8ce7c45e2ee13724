"""PostgREST-compatible REST layer of the local stack (``/rest/v1``).

Supported, as PostgREST answers it (what supabase-py and supabase-js send):

- tables and views of the exposed schemas (``[api] schemas``): GET/HEAD, POST (insert,
  single or bulk, ``?columns=``, ``Prefer: return=representation|minimal``), upsert
  (``?on_conflict=`` with ``resolution=merge-duplicates|ignore-duplicates``), PATCH, DELETE;
- filters ``eq neq gt gte lt lte like ilike match imatch isdistinct is in cs cd ov`` and
  ``fts plfts phfts wfts`` (without a language), ``not.``,
  ``or=(...)``/``and=(...)`` with nesting; ``select=`` with aliases; ``order=`` with
  ``nullsfirst|nullslast``; ``limit``/``offset``; ``Prefer: count=exact`` (Content-Range);
  ``Accept: application/vnd.pgrst.object+json`` (406 PGRST116 unless exactly one row, and
  a write that is not exactly one row is rolled back);
- ``/rpc/<fn>`` by POST (JSON object of named arguments) and GET (read-only transaction,
  arguments in the query string); functions returning a scalar, json, a row, a set of rows
  or scalars, or void; rows can be selected, filtered and ordered;
- ``max_rows`` caps every read; ``Accept-Profile``/``Content-Profile`` pick a schema.

Answered with a clear error instead: resource embedding and spreads (PGRST127), JSON
paths and casts in select, range-position operators and full-text languages (PGRST127), other media types
(406/415). Not applied: ``Prefer: missing=default`` (missing keys insert NULL),
``count=planned|estimated`` (answered exactly).
"""

from .service import RestService

__all__ = ["RestService"]
