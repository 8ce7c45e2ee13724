"""The application roles, least to most privileged, as the console names them.

The database's ``public.app_role`` enum is the declaration; this is its one copy in the
console (tests/integration/test_roles_declared_once.py holds them equal). A module of its
own, importing nothing, so any console module can use it without an import circle."""

ROLES = ("viewer", "operator", "approver", "admin")
