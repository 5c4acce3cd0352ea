"""Who may see the dashboard (auth) and proof that a POST came from our own page (CSRF).

Auth is one of: None (anyone who reaches the socket: `difo web` allows that on loopback
only), "user:password" (HTTP Basic), a bearer token, or a callable hook `(request) -> bool`
for an app that already knows its users. CSRF is a signed double-submit token: a random
nonce signed with HMAC-SHA256 lives in a SameSite=Strict cookie and in every form; a POST
passes only when both are present, equal, and signed by this app's secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request

CSRF_COOKIE = "difo_csrf"
CSRF_FIELD = "csrf"

Hook = Callable[[Request], bool | Awaitable[bool]]
Auth = str | Hook | None


class Guard:
    """Checks credentials and CSRF tokens for one app."""

    def __init__(self, auth: Auth = None, token: str | None = None,
                 secret: str | bytes | None = None) -> None:
        if isinstance(auth, str) and ":" not in auth:
            raise ValueError("auth must be 'user:password' (HTTP Basic), a callable, or None")
        self.auth = auth
        self.token = token
        if secret is None:
            # Per process: with several server processes behind one address, pass secret=.
            self.secret = secrets.token_bytes(32)
        else:
            self.secret = secret.encode() if isinstance(secret, str) else secret

    @property
    def required(self) -> bool:
        return self.auth is not None or self.token is not None

    async def allowed(self, request: Request) -> bool:
        """True when the request may see the dashboard."""
        if not self.required:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if self.token is not None and scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if isinstance(self.auth, str):
            if scheme.lower() != "basic":
                return False
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(given, self.auth.encode())
        if callable(self.auth):
            result = self.auth(request)
            if not isinstance(result, bool):
                result = await result
            return result
        return False

    @property
    def challenge(self) -> dict[str, str]:
        """Headers of a 401: a Basic challenge makes browsers ask for the password."""
        if isinstance(self.auth, str):
            return {"WWW-Authenticate": 'Basic realm="difo", charset="UTF-8"'}
        return {}

    # -- CSRF ------------------------------------------------------------------------------

    def new_token(self) -> str:
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign(nonce)}"

    def valid_token(self, token: str | None) -> bool:
        if not token or "." not in token:
            return False
        nonce, _, signature = token.partition(".")
        return hmac.compare_digest(signature, self._sign(nonce))

    def csrf_ok(self, cookie: str | None, field: str | None) -> bool:
        """The double-submit check: the form's token is the cookie's, and ours."""
        if not cookie or not field or not self.valid_token(cookie):
            return False
        return hmac.compare_digest(cookie, field)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode(), hashlib.sha256).hexdigest()
