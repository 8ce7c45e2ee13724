"""Every job type declared with the generic form (``console=FORM`` in
:mod:`executor.jobtypes`): params validated with the executor's own models, a dry run that
must pass for exactly these params, then creation.

Rolling cluster updates have their own wizard (``update_wizard``) with a pre-flight report.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from console.api import Api, Row
from console.errors import ValidationFailed
from console.models.common import Observable
from console.models.update_wizard import pydantic_problems
from executor.jobtypes import FORM_TYPES, model_for
from executor.vocabulary import JobType

#: the types the form offers, in the order of public.job_type
FORM_JOB_TYPES: tuple[str, ...] = tuple(t.value for t in FORM_TYPES)
#: the type a new form opens on: it only reads the servers and stores what it read
DEFAULT_FORM_JOB_TYPE: str = JobType.SCP_BACKUP.value


def target_fields(job_type: str) -> dict[str, tuple[str, bool]]:
    """field name -> (target kind, takes a list) for the job type's x-target fields."""
    out = {}
    for name, f in model_for(job_type).model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if "x-target" in extra:
            out[name] = (str(extra["x-target"]), f.annotation is not None and "list" in str(f.annotation))
    return out


def template(job_type: str) -> dict[str, Any]:
    """A params document to start from: defaults filled in, required fields left empty
    for the operator (targets come from the pickers)."""
    model = model_for(job_type)
    doc: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        if name in target_fields(job_type):
            continue
        if f.is_required():
            ann = f.annotation
            doc[name] = template_of(ann) if isinstance(ann, type) and issubclass(ann, BaseModel) else ""
        else:
            d = f.get_default(call_default_factory=True)
            doc[name] = (
                d.model_dump(mode="json")
                if isinstance(d, BaseModel)
                else (getattr(d, "value", d) if d is not None else None)
            )
    return {k: v for k, v in doc.items() if v is not None}


def template_of(model: type[BaseModel]) -> dict[str, Any]:
    doc = {}
    for name, f in model.model_fields.items():
        if f.is_required():
            doc[name] = ""
        else:
            d = f.get_default(call_default_factory=True)
            if d is not None:
                doc[name] = d
    return doc


class JobForm(Observable):
    def __init__(self, api: Api, job_type: str = FORM_JOB_TYPES[0]) -> None:
        super().__init__()
        self.api = api
        self.job_type = ""
        self.plan: Row | None = None
        self._planned: str | None = None  # the exact request the last successful dry run checked
        self.result: Row | None = None
        self.choose(job_type)

    def choose(self, job_type: str) -> None:
        if job_type not in FORM_JOB_TYPES:
            raise ValidationFailed(
                f"choose one of {', '.join(FORM_JOB_TYPES)} (rolling updates have their wizard)",
                ["job_type: not a form job type"],
            )
        self.job_type = job_type
        self.plan, self._planned, self.result = None, None, None
        self.changed()

    def params(
        self, text_or_doc: str | dict[str, Any], targets: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        """The validated params: the JSON text (or dict) with the picked targets put in."""
        if isinstance(text_or_doc, str):
            try:
                doc = json.loads(text_or_doc or "{}")
            except json.JSONDecodeError as exc:
                raise ValidationFailed(
                    f"the params are not JSON: {exc.msg} at line {exc.lineno}", [f"params: {exc.msg}"]
                ) from None
        else:
            doc = dict(text_or_doc)
        if not isinstance(doc, dict):
            raise ValidationFailed("the params must be a JSON object", ["params: not an object"])
        for name, (_kind, many) in target_fields(self.job_type).items():
            picked = (targets or {}).get(name)
            if picked is not None:
                doc[name] = list(picked) if many else (picked[0] if picked else None)
        try:
            m = model_for(self.job_type).model_validate(doc)
        except ValidationError as exc:
            problems = pydantic_problems(exc)
            raise ValidationFailed(
                f"the {self.job_type} params are not valid: " + "; ".join(problems), problems
            ) from None
        return m.model_dump(mode="json", exclude_none=True)

    def dry_run(self, params: dict[str, Any], **fields: Any) -> Row:
        res = self.api.create_job(self.job_type, params, dry_run=True, **fields)
        self.plan = res.get("plan")
        self._planned = json.dumps([self.job_type, params, fields], sort_keys=True)
        self.changed()
        return res

    def create(self, params: dict[str, Any], **fields: Any) -> Row:
        """Create the job; only after a successful dry run of these very params and fields."""
        if self._planned != json.dumps([self.job_type, params, fields], sort_keys=True):
            raise ValidationFailed("run the dry run for these exact params first", ["no matching dry run"])
        self.result = self.api.create_job(self.job_type, params, **fields)
        self._planned = None
        self.changed()
        return self.result
