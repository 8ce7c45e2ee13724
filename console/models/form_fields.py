"""Typed form fields from the executor's params models (``executor.jobparams``): what a form
draws for each field that is not a target picker. Choices (a ``Literal`` or an ``Enum``, or a
list of them) become selectors, booleans checkboxes, numbers bounded boxes with the model's
range, text a text box; a nested selection (a firmware selection, an ESXi image) its own
group of typed fields; a list of addresses, names or credential sets a list editor that
checks each entry as it is added (credential sets picked by name, in priority order). Only
a shape none of these fit would get a JSON box. The values go back through the same model (``JobForm.params``), so every
message is the model's, in words (``models/forms.py``)."""

from __future__ import annotations

import enum
import json
import types
import typing
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from console.errors import ValidationFailed
from console.models.job_form import target_fields
from executor.jobtypes import model_for

KINDS = (
    "choice",
    "choices",
    "bool",
    "int",
    "float",
    "text",
    "count_or_text",
    "ref",
    "list",
    "credentials",
    "nested",
    "json",
)
# id fields that are not targets but still name something the operator picks by name
REFS = {"site_id": "site", "catalog_id": "catalog", "baseline_id": "baseline"}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # one of KINDS
    required: bool
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    description: str = ""
    children: tuple[FieldSpec, ...] = ()  # nested: the selection's own fields
    item: Any = None  # list: the entries' annotation (each entry is checked against it)
    max_items: int | None = None

    @property
    def range_words(self) -> str:
        lo, hi = self.minimum, self.maximum
        fmt = lambda v: str(int(v)) if float(v).is_integer() else str(v)  # noqa: E731
        if lo is not None and hi is not None:
            return f"{fmt(lo)} to {fmt(hi)}"
        if lo is not None:
            return f"at least {fmt(lo)}"
        if hi is not None:
            return f"at most {fmt(hi)}"
        return ""


def _unwrap(ann: Any) -> tuple[Any, bool]:
    """The annotation without Optional (and whether None is allowed) and without Annotated."""
    nullable = False
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(ann))
        ann = args[0] if len(args) == 1 else ann
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann, nullable


def _choices(ann: Any) -> tuple[str, ...]:
    if typing.get_origin(ann) is typing.Literal:
        return tuple(str(x) for x in typing.get_args(ann))
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return tuple(str(x.value) for x in ann)
    return ()


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
        if getattr(m, "gt", None) is not None:
            lo = m.gt + 1 if isinstance(m.gt, int) else m.gt
        if getattr(m, "lt", None) is not None:
            hi = m.lt - 1 if isinstance(m.lt, int) else m.lt
    return lo, hi


def _default(f: Any) -> Any:
    if f.is_required():
        return None
    d = f.get_default(call_default_factory=True)
    if isinstance(d, BaseModel):
        return d.model_dump(mode="json")
    if isinstance(d, enum.Enum):
        return d.value
    if isinstance(d, list):
        return [getattr(x, "value", x) for x in d]
    return d


def field_specs(job_type: str) -> list[FieldSpec]:
    """Every params field of the job type that is not a target picker, as a typed field."""
    return model_specs(model_for(job_type), exclude=set(target_fields(job_type)))


def _max_items(metadata: list[Any]) -> int | None:
    return next((m.max_length for m in metadata if getattr(m, "max_length", None) is not None), None)


def model_specs(model: type[BaseModel], exclude: set[str] | None = None) -> list[FieldSpec]:
    """The fields of a params model (or of a nested selection) as typed fields."""
    out = []
    for name, f in model.model_fields.items():
        if name in (exclude or ()):
            continue
        ann, nullable = _unwrap(f.annotation)
        lo, hi = _bounds(list(f.metadata))
        base = {
            "name": name,
            "required": f.is_required(),
            "default": _default(f),
            "nullable": nullable,
            "description": f.description or "",
        }
        item = typing.get_args(ann)[0] if typing.get_origin(ann) is list and typing.get_args(ann) else None
        if _choices(ann):
            spec = FieldSpec(kind="choice", choices=_choices(ann), **base)
        elif item is not None and _choices(_unwrap(item)[0]):
            spec = FieldSpec(kind="choices", choices=_choices(_unwrap(item)[0]), **base)
        elif ann is bool:
            spec = FieldSpec(kind="bool", **base)
        elif ann is int:
            spec = FieldSpec(kind="int", minimum=lo, maximum=hi, **base)
        elif ann is float:
            spec = FieldSpec(kind="float", minimum=lo, maximum=hi, **base)
        elif ann is uuid.UUID and name in REFS:
            spec = FieldSpec(kind="ref", choices=(REFS[name],), **base)
        elif ann is str or _unwrap(ann)[0] is str:
            spec = FieldSpec(kind="text", **base)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            spec = FieldSpec(kind="nested", children=tuple(model_specs(ann)), **base)
        elif item is not None and _unwrap(item)[0] is uuid.UUID and _credential_kind(f):
            spec = FieldSpec(
                kind="credentials",
                choices=(_credential_kind(f),),
                item=item,
                max_items=_max_items(list(f.metadata)),
                **base,
            )
        elif item is not None and _unwrap(item)[0] in (str, int):
            spec = FieldSpec(kind="list", item=item, max_items=_max_items(list(f.metadata)), **base)
        elif _count_or_text(ann):  # a count or its text form (failure_budget: 2 or "25%"): one text box
            spec = FieldSpec(kind="count_or_text", **base)
        else:
            spec = FieldSpec(kind="json", **base)
        out.append(spec)
    return out


def _count_or_text(ann: Any) -> bool:
    """A union of a whole number and a text (each maybe constrained), as failure_budget."""
    if typing.get_origin(ann) not in (typing.Union, types.UnionType):
        return False
    return {_unwrap(a)[0] for a in typing.get_args(ann)} == {int, str}


def _credential_kind(f: Any) -> str:
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    return str(extra.get("x-credential") or "")


def entry_problem(spec: FieldSpec, text: str) -> str | None:
    """Why one entry of a list field is refused, in words (None = it is accepted): checked
    against the model's own item type, so the list editor says what create-job would."""
    from pydantic import TypeAdapter, ValidationError

    from console.models.forms import problem_text

    if not text.strip():
        return f"{spec.name}: type an entry first"
    try:
        TypeAdapter(spec.item).validate_python(text.strip())
    except ValidationError as exc:
        err = exc.errors()[0]
        return problem_text({**err, "loc": (spec.name,)})
    if spec.name == "ranges":
        return range_problem(text.strip())
    return None


def range_problem(text: str) -> str | None:
    """An address range the pattern accepts but that is no range: a network that is not one
    (10.0.0.300/24), a first-last pair of mixed families or the wrong way round."""
    import ipaddress

    try:
        if "/" in text:
            ipaddress.ip_network(text, strict=False)
        elif "-" in text:
            a, b = (ipaddress.ip_address(x) for x in text.split("-", 1))
            if a.version != b.version:
                return f"ranges: {text}: both ends must be IPv4, or both IPv6"
            if int(b) < int(a):
                return f"ranges: {text}: the first address must not be after the last"
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return f"ranges: {text} is not an address, a range a-b or a CIDR network such as 10.0.0.0/24"
    return None


def collect(specs: list[FieldSpec] | tuple[FieldSpec, ...], values: dict[str, Any]) -> dict[str, Any]:
    """The params document from the fields' values: empty optional fields are left out (the
    model's default applies); a JSON box that is not JSON is named in words."""
    doc: dict[str, Any] = {}
    problems = []
    for s in specs:
        v = values.get(s.name)
        if s.kind == "json":
            text = (v or "").strip()
            if not text:
                continue
            try:
                v = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(f"{s.name}: not JSON ({exc.msg} at line {exc.lineno})")
                continue
        elif s.kind in ("text", "ref") and isinstance(v, str):
            v = v.strip()
        elif s.kind == "count_or_text" and isinstance(v, str):
            v = v.strip()
            v = int(v) if v.isdigit() else v
        elif s.kind in ("list", "credentials"):
            v = list(v or ())
            if not v and not s.required:
                continue
        elif s.kind == "nested":
            try:
                v = collect(s.children, dict(v or {}))
            except ValidationFailed as exc:
                problems += [f"{s.name}.{p}" for p in exc.problems]
                continue
            if not v and not s.required:
                continue
        elif s.kind == "choices":
            v = list(v or ())
            if not v and not s.required:
                continue
        if v is None or (v == "" and not s.required):
            continue
        doc[s.name] = v
    if problems:
        raise ValidationFailed("the form is not complete: " + "; ".join(problems), problems)
    return doc
