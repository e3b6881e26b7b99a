"""Named admin tokens (``BILLING_ADMIN_TOKENS``) and their roles.

Each comma-separated entry is ``secret`` (named ``token-1``, ``token-2``, ... in the order the
plain entries appear), ``name:secret`` or ``name:secret:role``. Roles: ``admin`` (everything;
the default) and ``read`` (finance: reports and the dashboard only). The name is what the
audit log records (``admin:api:<name>``); the secret never leaves this process.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,39}")


class Role(StrEnum):
    ADMIN = "admin"  # every admin endpoint
    READ = "read"  # finance: reports and the dashboard only


@dataclass(frozen=True, kw_only=True)
class AdminToken:
    name: str
    secret: str = field(repr=False)
    role: Role = Role.ADMIN


def parse_admin_tokens(entries: Sequence[str]) -> list[AdminToken]:
    """The tokens of ``BILLING_ADMIN_TOKENS`` entries; ``ValueError`` (never quoting a
    secret) for a malformed entry, an unknown role or a name used twice."""
    tokens: list[AdminToken] = []
    plain = 0
    for position, raw in enumerate((e.strip() for e in entries if e and e.strip()), start=1):
        parts = raw.split(":")
        if len(parts) == 1:
            plain += 1
            tokens.append(AdminToken(name=f"token-{plain}", secret=raw))
            continue
        if len(parts) > 3:
            raise ValueError(f"entry {position} must be secret, name:secret or name:secret:role")
        name, secret, role = parts[0].strip(), parts[1].strip(), (parts[2].strip() if len(parts) == 3 else "admin")
        if not NAME.fullmatch(name):
            raise ValueError(f"entry {position}: the name must be 1-40 letters, digits or _ . @ -")
        if not secret:
            raise ValueError(f"entry {position} ({name}) has an empty secret")
        if role not in {r.value for r in Role}:
            raise ValueError(f"entry {position} ({name}): role must be admin or read")
        tokens.append(AdminToken(name=name, secret=secret, role=Role(role)))
    seen: set[str] = set()
    for t in tokens:
        if t.name in seen:
            raise ValueError(f"the name {t.name!r} is used twice")
        seen.add(t.name)
    return tokens


def match(given: str, tokens: Sequence[AdminToken]) -> AdminToken | None:
    """The token whose secret is ``given``, compared in constant time against every one."""
    given_b = given.encode("utf-8", "surrogatepass")
    found: AdminToken | None = None
    for t in tokens:
        if hmac.compare_digest(given_b, t.secret.encode("utf-8", "surrogatepass")) and found is None:
            found = t
    return found


def whole_entry(given: str, tokens: Sequence[AdminToken]) -> AdminToken | None:
    """The token whose whole ``BILLING_ADMIN_TOKENS`` entry (``name:secret`` or
    ``name:secret:role``) was sent instead of its secret -- an easy slip with
    ``Authorization: Bearer $BILLING_ADMIN_TOKENS`` -- so the refusal can say what to send.
    Still a refusal: the secret alone is the credential."""
    name, sep, rest = given.partition(":")
    if not sep:
        return None
    secret = rest.rsplit(":", 1)[0] if rest.endswith((":admin", ":read")) else rest
    named = [t for t in tokens if t.name == name]  # at most one: names are unique
    return match(secret, named)


__all__ = ["AdminToken", "Role", "match", "parse_admin_tokens", "whole_entry"]
