"""Who may do what over HTTP, and who did it.

Two tokens, because the user's design makes training admin-only: the *user* token labels and corrects; the
*admin* token also trains, re-clusters and deletes people. A token comes from the settings (``FACE_WEB_TOKEN``,
``FACE_WEB_ADMIN_TOKEN``) or, when unset, is generated into ``HOME/web/tokens.json`` (mode 0600) on first start
and printed once by ``serve``.

A request proves a token by ``Authorization: Bearer …`` (curl, scripts) or by the ``fp_token`` cookie the page
sets after asking once (HttpOnly, SameSite=Strict, so page scripts cannot read it and other sites cannot send it).
Cookie-authenticated state changes must also carry ``X-CSRF-Token``, an HMAC of the token that only the
server-rendered page knows: SameSite already stops cross-site requests, the header stops anything that slips past
it (old browsers, a same-site sibling app). Bearer requests need no CSRF token: browsers never add that header on
their own.

Reads need no token while the app is bound to loopback (only this machine's user can reach it); bound anywhere
else every call needs one. The actor written into every event is ``web:<role>:<fingerprint>`` (the first hex
digits of the token's SHA-256), so the audit log says which token acted without storing the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from face_pipeline.settings import Settings

COOKIE = "fp_token"
CSRF_HEADER = "X-CSRF-Token"
ROLES = ("user", "admin")


@dataclass(frozen=True)
class Caller:
    role: str  # "user" | "admin" | "anonymous"
    via: str  # "bearer" | "cookie" | "none"
    actor: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def authenticated(self) -> bool:
        return self.role in ROLES


ANONYMOUS = Caller("anonymous", "none", "web:anonymous")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass
class Tokens:
    """The two tokens of one library, and which of them ``serve`` generated just now (to print once)."""

    user: str
    admin: str
    generated: tuple[str, ...] = ()

    def role_of(self, presented: str | None) -> str | None:
        if not presented:
            return None
        # constant-time comparisons: a token must not leak through response timing
        if hmac.compare_digest(presented.encode(), self.admin.encode()):
            return "admin"
        if hmac.compare_digest(presented.encode(), self.user.encode()):
            return "user"
        return None

    def caller(self, presented: str | None, via: str) -> Caller | None:
        role = self.role_of(presented)
        if role is None:
            return None
        return Caller(role, via, f"web:{role}:{fingerprint(presented)}")

    def csrf_for(self, token: str) -> str:
        return hmac.new(token.encode(), b"face_pipeline csrf", hashlib.sha256).hexdigest()


def tokens_file(settings: Settings) -> Path:
    return settings.web_dir / "tokens.json"


def load_tokens(settings: Settings) -> Tokens:
    """Tokens from the settings, else from the home's token file, else generated and written there (0600)."""
    path = tokens_file(settings)
    stored: dict[str, str] = {}
    if path.is_file():
        try:
            stored = {k: v for k, v in json.loads(path.read_text()).items() if k in ROLES and isinstance(v, str) and v}
        except (OSError, ValueError):
            stored = {}
    configured = {"user": settings.web_token, "admin": settings.web_admin_token}
    generated = []
    values: dict[str, str] = {}
    for role in ROLES:
        if configured[role]:
            values[role] = configured[role]
        elif role in stored:
            values[role] = stored[role]
        else:
            values[role] = secrets.token_urlsafe(24)
            stored[role] = values[role]
            generated.append(role)
    if values["user"] == values["admin"]:
        raise ValueError("FACE_WEB_TOKEN and FACE_WEB_ADMIN_TOKEN must differ (the admin token may delete people)")
    if generated:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stored, f)
        os.replace(tmp, path)
    return Tokens(values["user"], values["admin"], tuple(generated))
