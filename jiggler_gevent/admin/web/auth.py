"""HTTP basic auth for the dashboard, and what counts as a loopback address.

`gjiggler web` turns it on from JIGGLER_WEB_PASSWORD (user JIGGLER_WEB_USER, default `admin`) and refuses a
non-loopback address without it unless `--no-auth` is given. Mounted apps (create_app) have no auth unless asked.
"""

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

REALM = "jiggler_gevent"
PASSWORD_ENV = "JIGGLER_WEB_PASSWORD"
USER_ENV = "JIGGLER_WEB_USER"
DEFAULT_USER = "admin"
CHALLENGE = ("WWW-Authenticate", f'Basic realm="{REALM}"')


class BasicAuth:
    """One user and password; `allows` checks a request's Authorization header in constant time."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user.encode("utf-8")
        self.password = password.encode("utf-8")

    def allows(self, environ: dict[str, Any]) -> bool:
        scheme, _, encoded = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # Both compared every time (no short-circuit), so the timing tells nothing about which one was wrong.
        user_ok = hmac.compare_digest(user, self.user)
        password_ok = hmac.compare_digest(password, self.password)
        return bool(sep) and user_ok and password_ok


def credentials_from_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(user, password) from JIGGLER_WEB_USER (default `admin`) and JIGGLER_WEB_PASSWORD; None without a password."""
    password = environ.get(PASSWORD_ENV, "")
    if not password:
        return None
    return environ.get(USER_ENV) or DEFAULT_USER, password


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed); False for anything else, `0.0.0.0` included."""
    host = host.strip().strip("[]")
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
