"""executor/identity.py and console/identity.py pieces that need no directory: settings,
the ppolicy answer, envelopes opened without registering their values, break-glass hashes."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from console.identity import _b64u, hash_secret
from executor.identity import IdentityError, IdentitySettings, _ppolicy_error, answer_mac, open_envelope
from executor.log import SECRETS
from executor.secrets import KeyPair, seal, unb64u

BASE = {"bind_dn_template": "uid={username},ou=people,dc=x", "base_dn": "dc=x"}


def test_settings_take_tls_uris_only_and_split_a_list():
    s = IdentitySettings(uris="ldaps://a.example:636, ldap://b.example", starttls=True, **BASE)
    assert s.uris == ["ldaps://a.example:636", "ldap://b.example"]
    for bad in ("http://a.example", "ldaps://", "a.example"):
        with pytest.raises(ValidationError):
            IdentitySettings(uris=bad, **BASE)
    with pytest.raises(ValidationError):
        IdentitySettings(uris="ldaps://a", bind_dn_template="uid=fixed,dc=x", base_dn="dc=x")


def test_the_password_policy_answer_tells_a_locked_account():
    control = "1.3.6.1.4.1.42.2.27.8.5.1"
    assert _ppolicy_error({"controls": {control: {"value": b"0\x03\x81\x01\x01"}}}) == 1  # accountLocked
    assert (
        _ppolicy_error({"controls": {control: {"value": b"0\x05\xa0\x03\x80\x01\x05"}}}) is None
    )  # a warning only
    assert _ppolicy_error({"controls": {}}) is None
    assert _ppolicy_error({}) is None


def test_login_envelopes_open_without_entering_the_redaction_registry():
    keys = KeyPair(X25519PrivateKey.generate())
    password = "login-pw-" + "q" * 20
    env = seal(keys.public_raw, {"username": "bob", "password": password, "challenge": "c" * 43})
    before = len(SECRETS)
    assert open_envelope(keys, env)["password"] == password
    assert len(SECRETS) == before  # every user's password would otherwise live as long as the process
    other = KeyPair(X25519PrivateKey.generate())
    with pytest.raises(IdentityError):
        open_envelope(other, env)
    env["ct"] = env["ct"][:-4] + ("AAAA" if not env["ct"].endswith("AAAA") else "BBBB")
    with pytest.raises(IdentityError):
        open_envelope(keys, env)


def test_answer_macs_depend_on_request_answer_and_keys():
    keys = KeyPair(X25519PrivateKey.generate())
    verifier = KeyPair(X25519PrivateKey.generate())
    mac = answer_mac(keys, verifier.public_b64, "r1", '{"ok":true}')
    assert mac == answer_mac(keys, verifier.public_b64, "r1", '{"ok":true}')
    assert mac != answer_mac(keys, verifier.public_b64, "r2", '{"ok":true}')
    assert mac != answer_mac(keys, verifier.public_b64, "r1", '{"ok":false}')
    assert mac != answer_mac(KeyPair(X25519PrivateKey.generate()), verifier.public_b64, "r1", '{"ok":true}')
    with pytest.raises(IdentityError):
        answer_mac(keys, _b64u(b"short"), "r1", "{}")


def test_break_glass_hashes_are_scrypt_in_the_format_the_function_reads():
    stored = hash_secret("the-secret", n=1024)
    kind, n, r, p, salt, digest = stored.split("$")
    assert (kind, n, r, p) == ("scrypt", "1024", "8", "1")
    assert hashlib.scrypt(b"the-secret", salt=unb64u(salt), n=1024, r=8, p=1, dklen=32) == unb64u(digest)
    assert "the-secret" not in stored


def test_presets_fill_what_is_not_set_and_an_explicit_setting_wins(monkeypatch, tmp_path):
    from executor.directory_presets import directory_presets

    assert set(directory_presets()) == {"openldap", "freeipa", "ad"}
    ipa = IdentitySettings(uris="ldaps://ipa.example", preset="freeipa", suffix="dc=ipa,dc=example")
    assert (ipa.bind_dn_template, ipa.base_dn, ipa.group_base_dn, ipa.nesting, ipa.disabled_filter) == (
        "uid={username},cn=users,cn=accounts,dc=ipa,dc=example",
        "cn=users,cn=accounts,dc=ipa,dc=example",
        "cn=groups,cn=accounts,dc=ipa,dc=example",
        "memberof",
        "(nsAccountLock=TRUE)",
    )
    # from the environment, as the agent reads it: the preset, its suffix and one override
    monkeypatch.setenv("RACKPILOT_IDM_URIS", "ldaps://dc1.corp.example,ldaps://dc2.corp.example")
    monkeypatch.setenv("RACKPILOT_IDM_PRESET", "ad")
    monkeypatch.setenv("RACKPILOT_IDM_SUFFIX", "DC=corp,DC=example")
    monkeypatch.setenv("RACKPILOT_IDM_NESTING", "search")
    monkeypatch.setenv("RACKPILOT_IDM_MAIL_ATTRIBUTE", "userPrincipalName")
    ad = IdentitySettings()
    assert (ad.mail_attribute, ad.member_of_attribute, ad.member_attribute) == (
        "userPrincipalName",
        "memberOf",
        "member",
    )
    assert ad.bind_dn_template == "{username}@corp.example"
    assert ad.user_filter == "(&(objectClass=user)(sAMAccountName={username}))"
    assert ad.disabled_filter == "(userAccountControl:1.2.840.113556.1.4.803:=2)"
    assert ad.nesting == "search"  # the explicit setting, not the preset's "ad"
    # and from the env file the systemd unit names (--env-file)
    for env in ("URIS", "PRESET", "SUFFIX", "NESTING", "MAIL_ATTRIBUTE"):
        monkeypatch.delenv(f"RACKPILOT_IDM_{env}")
    env_file = tmp_path / "executor.env"
    env_file.write_text(
        "RACKPILOT_IDM_URIS=ldaps://idm1.example.org,ldaps://idm2.example.org\n"
        "RACKPILOT_IDM_PRESET=freeipa\nRACKPILOT_IDM_SUFFIX=dc=example,dc=org\n"
    )
    from_file = IdentitySettings(_env_file=env_file)  # type: ignore[call-arg]
    assert from_file.uris == ["ldaps://idm1.example.org", "ldaps://idm2.example.org"]
    assert from_file.base_dn == "cn=users,cn=accounts,dc=example,dc=org"
    plain = IdentitySettings(uris="ldaps://a", preset="openldap", suffix="dc=x")
    assert plain.user_filter == "(&(objectClass=inetOrgPerson)(uid={username}))"
    assert plain.disabled_filter == "(pwdAccountLockedTime=000001010000Z)"


def test_settings_refuse_a_missing_suffix_an_unknown_preset_and_a_broken_filter(monkeypatch):
    for env in ("URIS", "PRESET", "SUFFIX", "NESTING"):
        monkeypatch.delenv(f"RACKPILOT_IDM_{env}", raising=False)
    with pytest.raises(ValidationError, match="RACKPILOT_IDM_SUFFIX"):
        IdentitySettings(uris="ldaps://a", preset="freeipa")
    with pytest.raises(ValidationError, match="RACKPILOT_IDM_SUFFIX"):
        IdentitySettings(uris="ldaps://a", preset="freeipa", suffix="not a dn")
    with pytest.raises(ValidationError, match="dc= parts"):
        IdentitySettings(uris="ldaps://a", preset="ad", suffix="o=corp")
    with pytest.raises(ValidationError):
        IdentitySettings(uris="ldaps://a", preset="novell", suffix="dc=x")
    with pytest.raises(ValidationError, match="BIND_DN_TEMPLATE"):
        IdentitySettings(uris="ldaps://a")
    for bad in ("nsAccountLock=TRUE", "(a=1))(", "((a=1)", "(a=1)(b=2)x"):
        with pytest.raises(ValidationError, match="parenthesised"):
            IdentitySettings(uris="ldaps://a", disabled_filter=bad, **BASE)
    assert IdentitySettings(uris="ldaps://a", disabled_filter=r"(cn=a\29b)", **BASE).disabled_filter
    for bad in ("mail)(uid=*", "", "1.2.", "mail attr"):
        with pytest.raises(ValidationError, match="attribute name"):
            IdentitySettings(uris="ldaps://a", mail_attribute=bad, **BASE)
    assert (
        IdentitySettings(uris="ldaps://a", member_attribute="2.5.4.31", **BASE).member_attribute == "2.5.4.31"
    )


def test_the_console_fills_a_site_from_the_same_presets():
    from console.errors import ValidationFailed
    from console.models.identity_admin import NESTING, PRESETS, IdentityAdmin
    from executor.directory_presets import directory_presets

    assert set(PRESETS) == set(directory_presets())
    assert {p["nesting"] for p in directory_presets().values()} <= set(NESTING)
    assert (
        IdentityAdmin.preset("freeipa", " dc=ipa,dc=example ")["base_dn"]
        == "cn=users,cn=accounts,dc=ipa,dc=example"
    )
    with pytest.raises(ValidationFailed) as exc:
        IdentityAdmin.preset("ad", "")
    assert exc.value.problems[0].startswith("preset: ")


def test_a_break_glass_notice_says_who_why_from_where_and_until_when():
    """The payload breakglass_grant queues on every channel, rendered as the dispatcher
    sends it: critical in the subject, the account, role, reason, address and expiry in
    the body and the Teams card."""
    from executor.notify import render, teams_card

    payload = {
        "type": "break-glass",
        "severity": "critical",
        "account": "oncall-1",
        "role": "admin",
        "reason": "directory down, restoring access",
        "client": "192.0.2.7",
        "session_id": "5f0c2a8e-0000-4000-8000-000000000001",
        "expires_at": "2026-12-07T04:00:00+00:00",
    }
    subject, body = render("breakglass_used", payload)
    assert subject == "[rackpilot] CRITICAL: break-glass access used: oncall-1"
    for line in (
        "severity: critical",
        "account: oncall-1",
        "role: admin",
        "reason: directory down, restoring access",
        "client: 192.0.2.7",
        "expires_at: 2026-12-07T04:00:00+00:00",
    ):
        assert line in body.splitlines(), (line, body)
    facts = teams_card("breakglass_used", payload)["attachments"][0]["content"]["body"][1]["facts"]
    assert {"title": "account", "value": "oncall-1"} in facts and {
        "title": "client",
        "value": "192.0.2.7",
    } in facts
