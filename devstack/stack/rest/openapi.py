"""The OpenAPI 2.0 (Swagger) document PostgREST serves at the root (``GET /rest/v1/``).

Built from the schema cache: a path per table and view (GET; POST, PATCH and DELETE on
tables) and per function (``/rpc/<name>``, GET and POST), a definition per table and view
with its columns (type, format, primary and foreign keys in the description, NOT NULL
columns without a default as ``required``). Like PostgREST with
``openapi-mode = ignore-privileges``, it lists everything in the exposed schema.
"""

from __future__ import annotations

from typing import Any

from .schema import Column, Function, Relation, SchemaCache

# Postgres type (format_type) -> OpenAPI type; anything else is a string
_TYPES = {
    "smallint": "integer",
    "integer": "integer",
    "bigint": "integer",
    "numeric": "number",
    "real": "number",
    "double precision": "number",
    "boolean": "boolean",
    "json": None,
    "jsonb": None,
}
MEDIA = ["application/json", "application/vnd.pgrst.object+json", "text/csv"]


def _property(col: Column, pk: bool, fks: list[str]) -> dict[str, Any]:
    display = col.display or "text"
    prop: dict[str, Any] = {"format": display}
    if display.endswith("[]"):
        prop["type"] = "array"
        item = _TYPES.get(display[:-2], "string")
        prop["items"] = {"type": item} if item else {}
    else:
        typ = _TYPES.get(display, "string")
        if typ:
            prop["type"] = typ
    if col.default != "null" and not col.default.startswith("nextval("):
        prop["default"] = col.default
    notes = []
    if pk:
        notes.append("This is a Primary Key.<pk/>")
    notes.extend(fks)
    if notes:
        prop["description"] = "Note:\n" + "\n".join(notes)
    return prop


def _definition(rel: Relation, cache: SchemaCache) -> dict[str, Any]:
    fks: dict[str, list[str]] = {}
    for r in cache.relationships.get((rel.schema, rel.name), ()):
        if r.cardinality in ("m2o", "o2o") and r.junction is None:
            for col, fcol in r.columns:
                if col not in rel.pk or r.cardinality == "o2o":
                    fks.setdefault(col, []).append(
                        f"This is a Foreign Key to `{r.ftable[1]}.{fcol}`.<fk table='{r.ftable[1]}' column='{fcol}'/>"
                    )
    props = {name: _property(col, name in rel.pk, fks.get(name, [])) for name, col in rel.columns.items()}
    required = [n for n, c in rel.columns.items() if c.not_null and c.default == "null" and not c.generated]
    out: dict[str, Any] = {"properties": props, "type": "object"}
    if required:
        out["required"] = required
    return out


def _table_ops(name: str, writable: bool) -> dict[str, Any]:
    ref = {"$ref": f"#/definitions/{name}"}
    ops: dict[str, Any] = {
        "get": {
            "tags": [name],
            "produces": MEDIA,
            "responses": {
                "200": {"description": "OK", "schema": {"type": "array", "items": ref}},
                "206": {"description": "Partial Content"},
            },
        }
    }
    if writable:
        ops["post"] = {
            "tags": [name],
            "parameters": [{"in": "body", "name": name, "required": False, "schema": ref}],
            "responses": {"201": {"description": "Created"}},
        }
        ops["patch"] = {
            "tags": [name],
            "parameters": [{"in": "body", "name": name, "required": False, "schema": ref}],
            "responses": {"204": {"description": "No Content"}},
        }
        ops["delete"] = {"tags": [name], "responses": {"204": {"description": "No Content"}}}
    return ops


def _rpc_ops(name: str, fns: list[Function]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    required: set[str] = set()
    for fn in fns:
        for a in fn.args:
            args[a.name] = {"format": a.type.split(".")[-1].strip('"'), "type": "string"}
        required |= set(fn.required)
    body = {
        "in": "body",
        "name": "args",
        "required": True,
        "schema": {"type": "object", "properties": args, "required": sorted(required)},
    }
    ok = {"200": {"description": "OK"}}
    return {
        "get": {
            "tags": ["(rpc) " + name],
            "responses": ok,
            "parameters": [
                {"in": "query", "name": n, "required": n in required, "type": "string"} for n in args
            ],
        },
        "post": {"tags": ["(rpc) " + name], "parameters": [body], "produces": MEDIA, "responses": ok},
    }


def document(cache: SchemaCache, schema: str, host: str | None) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "tags": ["Introspection"],
                "summary": "OpenAPI description (this document)",
                "produces": ["application/openapi+json", "application/json"],
                "responses": {"200": {"description": "OK"}},
            }
        }
    }
    definitions: dict[str, Any] = {}
    for (s, name), rel in sorted(cache.relations.items()):
        if s != schema:
            continue
        paths[f"/{name}"] = _table_ops(name, rel.kind in ("r", "p"))
        definitions[name] = _definition(rel, cache)
    for (s, name), fns in sorted(cache.functions.items()):
        if s == schema:
            paths[f"/rpc/{name}"] = _rpc_ops(name, [f for f in fns if f.supported] or fns)
    doc: dict[str, Any] = {
        "swagger": "2.0",
        "info": {
            "title": "standard public schema" if schema == "public" else schema,
            "description": "",
            "version": "rackpilot",
        },
        "basePath": "/rest/v1/",
        "schemes": ["http"],
        "consumes": ["application/json", "application/vnd.pgrst.object+json", "text/csv"],
        "produces": ["application/json", "application/vnd.pgrst.object+json", "text/csv"],
        "paths": paths,
        "definitions": definitions,
        "externalDocs": {
            "description": "PostgREST Documentation",
            "url": "https://postgrest.org/en/latest/api.html",
        },
    }
    if host:
        doc["host"] = host
    return doc
