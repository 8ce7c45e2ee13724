"""Directory presets: the attribute names, containers and rules of FreeIPA, Active
Directory and plain OpenLDAP, declared once in ``executor/data/directory_presets.yaml``.
The identity agent applies one with ``RACKPILOT_IDM_PRESET`` (executor/identity.py); the
console fills a site's directory settings from one (console/models/identity_admin.py)."""

from __future__ import annotations

from pathlib import Path

import yaml
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.dn import parse_dn

PRESETS_FILE = Path(__file__).parent / "data" / "directory_presets.yaml"
PRESET_FIELDS = (
    "bind_dn_template",
    "base_dn",
    "group_base_dn",
    "user_filter",
    "nesting",
    "disabled_filter",
    "mail_attribute",
    "display_name_attribute",
    "member_of_attribute",
    "member_attribute",
)


def directory_presets() -> dict[str, dict[str, str]]:
    """The directory presets (executor/data/directory_presets.yaml), by name."""
    data = yaml.safe_load(PRESETS_FILE.read_text())
    return {name: {k: str(v) for k, v in fields.items()} for name, fields in data.items()}


def preset_values(name: str, suffix: str | None) -> dict[str, str]:
    """The settings a preset gives for a directory whose naming context is ``suffix``."""
    presets = directory_presets()
    if name not in presets:
        raise ValueError(f"unknown directory preset {name!r}: one of {', '.join(sorted(presets))}")
    fields = {k: v for k, v in presets[name].items() if k in PRESET_FIELDS}
    needs_suffix = any("{suffix}" in v or "{domain}" in v for v in fields.values())
    if needs_suffix:
        try:
            rdns = parse_dn(suffix or "")
        except ldap_exc.LDAPInvalidDnError:
            rdns = []
        if not rdns:
            raise ValueError(
                f"preset {name!r} needs the directory's suffix (RACKPILOT_IDM_SUFFIX, e.g. dc=example,dc=org)"
            )
        domain = ".".join(v for a, v, _sep in rdns if a.lower() == "dc")
        for k, v in fields.items():
            if "{domain}" in v and not domain:
                raise ValueError(f"preset {name!r} needs a suffix of dc= parts to name the domain")
            fields[k] = v.replace("{suffix}", str(suffix)).replace("{domain}", domain)
    return fields
