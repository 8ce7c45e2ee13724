"""PostgREST-compatible REST layer of the local stack (``/rest/v1``).

Supported, as PostgREST answers it (what supabase-py and supabase-js send):

- tables and views of the exposed schemas (``[api] schemas``): GET/HEAD, POST (insert,
  single or bulk, ``?columns=``, ``Prefer: return=representation|minimal``), upsert
  (``?on_conflict=`` with ``resolution=merge-duplicates|ignore-duplicates``), PATCH, DELETE;
- filters ``eq neq gt gte lt lte like ilike match imatch isdistinct is in cs cd ov``, the
  range operators ``sl sr nxl nxr adj``, the ``(any)``/``(all)`` modifiers of ``eq gt gte
  lt lte like ilike match imatch``, ``fts plfts phfts wfts`` with or without a language,
  ``not.``, ``or=(...)``/``and=(...)`` with nesting; ``select=`` with aliases; ``order=``
  with ``nullsfirst|nullslast``; ``limit``/``offset``; ``Prefer: count=exact``
  (Content-Range); ``Accept: application/vnd.pgrst.object+json`` (406 PGRST116 unless
  exactly one row, and a write that is not exactly one row is rolled back);
- resource embedding over the foreign keys of the schema cache: many-to-one, one-to-one,
  one-to-many and many-to-many (junction tables), aliases, ``!hint`` disambiguation (by
  foreign key, column or junction), ``!inner``, spreads (``...rel(cols)``, to-one and
  to-many), empty embeds, filters/``or``/``order``/``limit``/``offset`` on embedded resources
  by path, ``embed=is.null``/``not.is.null``, top-level ``order=rel(col)`` on to-one
  embeddings, embedding after writes and on functions returning table rows. PGRST200,
  PGRST201 (300), PGRST108 and PGRST118 as PostgREST answers them;
- ``/rpc/<fn>`` by POST (JSON object of named arguments) and GET (read-only transaction,
  arguments in the query string); functions returning a scalar, json, a row, a set of rows
  or scalars, or void; rows can be selected, filtered and ordered;
- ``max_rows`` caps every read (every embedded list too);
  ``Accept-Profile``/``Content-Profile`` pick a schema;
- ``Accept: text/csv`` (PostgREST's CSV: a header line, rows in Postgres's record text
  form, CRLF); ``Accept: application/vnd.pgrst.plan[+text|+json]; options=...`` (EXPLAIN as
  the caller) when the authenticator role has ``pgrst.db_plan_enabled`` set, else 406
  PGRST107 as PostgREST's default; ``GET /`` answers the OpenAPI 2.0 document.

Answered with a clear error instead: JSON paths and casts in select (PGRST127), aggregate
functions (PGRST123, off by default in PostgREST and on Supabase), other media types
(406/415). Not applied: ``count=planned|estimated`` (answered exactly). The conformance
table in ``devstack/README.md`` lists every feature.
"""

from .service import RestService

__all__ = ["RestService"]
