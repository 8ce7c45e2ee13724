"""``catalog_refresh``: download a registered firmware catalog, check it, load its packages.

Params: :class:`executor.jobparams.CatalogRefreshParams` (catalog_id, stale_after_days).
The catalog row (``firmware_catalogs``) gives the URL, the TLS trust (``tls_verify``, an
optional ``ca_pem``) and an optional SHA-256 pin (``expected_sha256``).

=======  ========  =======================================================================
step     priority  resumable
=======  ========  =======================================================================
refresh  100       yes: it only reads the catalog; the record replaces the catalog's
                   packages as a whole, so a re-run writes the same rows
=======  ========  =======================================================================

Outcome (``firmware_catalogs.last_status``, see migration 20261207120100):
``ok``; ``moved`` when the URL redirected (loaded from ``moved_to``: update the URL);
``stale`` when the catalog's own date is older than ``stale_after_days``; ``failed`` when
the download, the parse or the pin failed: the row says why and the job fails with the same
words, while the packages of the last good refresh stay. ``Catalog.xml`` and
``Catalog.xml.gz`` are told apart by content (:meth:`Catalog.from_bytes`).

A catalog with a ``signing_key`` (migration 20261207120100) is verified before anything is
loaded: ``<URL>.sign`` (beside where the catalog was found, after a redirect too) must be a
good OpenPGP signature by that key (:mod:`executor.targets.catalog_signature`, gpgv);
``signature_status`` says ``signed_ok``, or ``signature_bad`` / ``signature_missing`` and the
refresh fails like a pin mismatch, keeping the last good packages.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from typing import Any, NoReturn

from ..jobparams import CatalogRefreshParams
from ..steps import JobHandler, StepContext, step
from ..targets.catalog import Catalog
from ..targets.catalog_signature import SIGNATURE_MAX_BYTES, SignatureKeyError, verify
from ..targets.errors import CatalogError
from ..vocabulary import JobType, TaskStatus, TaskTargetKind
from . import register
from ._dell import DellHandlerError, http_get, params_of
from .firmware import CATALOG_MAX_BYTES

BATCH = 2000  # packages per executor_record_catalog call (count)


def _verify(row: dict[str, Any]) -> ssl.SSLContext | bool:
    if row.get("ca_pem"):
        return ssl.create_default_context(cadata=str(row["ca_pem"]))
    return bool(row.get("tls_verify", True))


async def download(row: dict[str, Any]) -> tuple[bytes, str | None]:
    """The catalog's bytes and, when the URL redirected, where it moved to."""
    url = str(row["url"])
    r = await http_get(
        url,
        what="catalog",
        operation="refresh catalog",
        verify=_verify(row),
        hint="check the URL, the TLS trust and that the executor can reach it",
    )
    moved = str(r.url) if r.history and str(r.url) != url else None
    if r.status_code == 404:
        raise CatalogError(
            f"catalog {url} is not there (HTTP 404): it moved or was removed; update its URL",
            operation="refresh catalog",
        )
    if r.status_code != 200:
        raise CatalogError(
            f"cannot download catalog {url}: HTTP {r.status_code}", operation="refresh catalog"
        )
    if len(r.content) > CATALOG_MAX_BYTES:
        raise CatalogError(
            f"catalog {url} is larger than {CATALOG_MAX_BYTES} bytes", operation="refresh catalog"
        )
    return r.content, moved


async def download_signature(row: dict[str, Any], url: str) -> bytes | None:
    """The detached signature at ``url`` (``<catalog>.sign``); None when there is none (404)."""
    r = await http_get(url, what="the catalog's signature", operation="refresh catalog", verify=_verify(row))
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        raise CatalogError(
            f"cannot download the catalog's signature {url}: HTTP {r.status_code}",
            operation="refresh catalog",
        )
    return r.content[: SIGNATURE_MAX_BYTES + 1]


class _Refused(CatalogError):
    """A refresh refused after its outcome was recorded (pin or signature)."""


def package_rows(catalog: Catalog) -> list[dict[str, Any]]:
    return [
        {
            "component": p.name[:255] or p.package_id,
            "model": ",".join(sorted(p.models))[:255],
            "version": p.version,
            "path": p.path,
            "criticality": p.criticality,
            "reboot_required": p.reboot_required,
        }
        for p in catalog.packages
    ]


async def _record(
    ctx: StepContext, result: dict[str, Any], packages: list[dict[str, Any]] | None = None
) -> int:
    """``executor_record_catalog``: the refresh's outcome on the catalog row and, when
    ``packages`` are given, its packages (replaced as a whole, :data:`BATCH` a call)."""
    if packages is None:
        await ctx.rpc("executor_record_catalog", {"p_result": result})
        return 0
    loaded = 0
    for i in range(0, max(len(packages), 1), BATCH):
        loaded += int(
            await ctx.rpc(
                "executor_record_catalog",
                {"p_result": result, "p_packages": packages[i : i + BATCH], "p_replace": i == 0},
            )
            or 0
        )
    return loaded


async def _refuse(
    ctx: StepContext, row: dict[str, Any], moved: str | None, signature_status: str, words: str
) -> NoReturn:
    """A pin or signature check failed: recorded on the catalog row, then raised."""
    await _record(
        ctx,
        {"status": "failed", "signature_status": signature_status, "moved_to": moved, "error": words[:2000]},
    )
    raise _Refused(f"catalog {row['url']}: {words}", operation="refresh catalog")


async def _signed_by(ctx: StepContext, row: dict[str, Any], data: bytes, moved: str | None) -> str | None:
    """The fingerprint of the catalog's signing key, once ``<URL>.sign`` is verified."""
    sig_url = f"{moved or row['url']}.sign"
    sig = await download_signature(row, sig_url)
    if sig is None:
        await _refuse(
            ctx,
            row,
            moved,
            "signature_missing",
            f"the catalog has a signing key but no signature at {sig_url} (HTTP 404)",
        )
    try:
        check = await asyncio.to_thread(verify, data, sig, str(row["signing_key"]))
    except SignatureKeyError as exc:
        await _refuse(ctx, row, moved, "signature_bad", f"the catalog's signing key is unusable: {exc}")
    if not check.ok:
        await _refuse(ctx, row, moved, "signature_bad", f"{sig_url}: {check.detail}")
    return check.fingerprint


async def _checked(
    ctx: StepContext, row: dict[str, Any]
) -> tuple[bytes, str | None, str, str | None, Catalog]:
    """The catalog downloaded, held to its pin and signature and parsed: (bytes, where it
    moved to, SHA-256, signing key's fingerprint, catalog). A failure is recorded on the
    catalog row (its last good packages stay) and raised."""
    pin = row.get("expected_sha256")
    moved: str | None = None
    signed: str | None = None
    try:
        data, moved = await download(row)
        digest = hashlib.sha256(data).hexdigest()
        if pin and digest != pin:
            await _refuse(
                ctx, row, moved, "pinned_mismatch", f"the catalog's SHA-256 {digest} is not the pinned {pin}"
            )
        if row.get("signing_key"):
            signed = await _signed_by(ctx, row, data, moved)
        catalog = await asyncio.to_thread(Catalog.from_bytes, data, str(row["url"]))
    except CatalogError as exc:
        if not isinstance(exc, _Refused):
            await _record(ctx, {"status": "failed", "error": str(exc)[:2000], "moved_to": moved})
        raise
    return data, moved, digest, signed, catalog


@register
class CatalogRefreshHandler(JobHandler):
    job_type = JobType.CATALOG_REFRESH

    def validate(self, job: dict[str, Any]) -> None:
        params_of(job, CatalogRefreshParams)

    @step(100, resumable=True)
    async def refresh(self, ctx: StepContext) -> dict[str, Any]:
        p: CatalogRefreshParams = params_of(ctx.job, CatalogRefreshParams)
        rows = await ctx.select(
            "firmware_catalogs",
            "id,site_id,name,url,tls_verify,ca_pem,expected_sha256,signing_key",
            id=str(p.catalog_id),
        )
        if not rows or str(rows[0]["site_id"]) != str(ctx.job.get("site_id")):
            raise DellHandlerError(f"catalog {p.catalog_id} not found at the job's site")
        row = rows[0]
        pin, key = row.get("expected_sha256"), row.get("signing_key")
        data, moved, digest, signed, catalog = await _checked(ctx, row)
        age = catalog.age_days()
        stale = age is not None and age > p.stale_after_days
        status = "moved" if moved else "stale" if stale else "ok"
        warning = (
            f"the catalog moved to {moved}; update its URL"
            if moved
            else f"the catalog is {age:.0f} days old (more than {p.stale_after_days})"
            if stale
            else None
        )
        result = {
            "status": status,
            "error": warning,
            "sha256": digest,
            "signature_status": "signed_ok" if key else "pinned_ok" if pin else "unverified",
            "compressed": data[:2] == b"\x1f\x8b",
            "component_count": len(catalog.packages),
            "catalog_date": catalog.date_time if age is not None else None,
            "version": catalog.version or None,
            "moved_to": moved,
        }
        loaded = await _record(ctx, result, package_rows(catalog))
        summary = {
            **result,
            "packages_loaded": loaded,
            "age_days": None if age is None else round(age, 1),
            "signed_by": signed,
        }
        for t in (ctx.job.get("scope") or {}).get("targets") or []:
            if isinstance(t, dict) and t.get("kind") == "firmware_catalog":
                await ctx.update_task(
                    TaskTargetKind.FIRMWARE_CATALOG,
                    {"id": t["id"], "name": str(t.get("name") or "")},
                    TaskStatus.COMPLETED,
                    result=summary,
                    progress=100,
                )
        return summary
