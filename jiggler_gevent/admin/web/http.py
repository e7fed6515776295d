"""The small slice of HTTP the dashboard needs: a request, a response, and CSRF tokens.

CSRF: every browser gets a token `nonce.HMAC(secret, nonce)` in a cookie (HttpOnly, SameSite=Strict)
and in a hidden field of every form. A POST is accepted only when the field equals the cookie and the
signature verifies, so another site can neither read nor forge it.
"""

import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

MAX_FORM_BYTES = 1 << 20
CSRF_COOKIE = "jiggler_csrf"
CSRF_FIELD = "csrf"


class Request:
    """One WSGI request: method, path, query, cookies and (for POST) the form."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.root: str = environ.get("SCRIPT_NAME", "").rstrip("/")
        self.path = _native(environ.get("PATH_INFO", "")) or "/"
        self.query = _flat(parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        self.cookies = _cookies(environ.get("HTTP_COOKIE", ""))
        self.form_lists = self._read_form() if self.method == "POST" else {}
        self.form = _flat(self.form_lists)

    def _read_form(self) -> dict[str, list[str]]:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= 0 or length > MAX_FORM_BYTES:
            return {}
        body = self.environ["wsgi.input"].read(length).decode("utf-8", "surrogateescape")
        return parse_qs(body, keep_blank_values=True, encoding="utf-8", errors="surrogateescape")

    def url(self, path: str) -> str:
        """An absolute path inside the app (honours SCRIPT_NAME when mounted under a prefix)."""
        return self.root + path

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        """A query integer clamped to [low, high]; `default` when missing or not a number."""
        try:
            return min(high, max(low, int(self.query.get(name, default))))
        except ValueError:
            return default


class Response:
    """Status, headers and a body."""

    def __init__(
        self,
        body: Any = b"",
        status: str = "200 OK",
        content_type: str = "text/html; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.body = utf8(body) if isinstance(body, str) else body
        self.status = status
        self.headers = [("Content-Type", content_type)] + list(headers or [])

    @classmethod
    def redirect(cls, location: str) -> "Response":
        """303 See Other: the browser follows with a GET (post/redirect/get)."""
        return cls(b"", "303 See Other", headers=[("Location", location)])


def utf8(text: str) -> bytes:
    """`text` as UTF-8; a lone surrogate (a byte of a payload that was not UTF-8) becomes U+FFFD, not an error."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _native(path: str) -> str:
    """PATH_INFO as text: a WSGI server gives the path's bytes as latin-1 (PEP 3333); they are UTF-8, and a byte
    that is not is kept by surrogateescape, as Redis replies are (html.path_part quotes it back)."""
    try:
        return path.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # not from a WSGI server: text already
        return path


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any characters (hmac.compare_digest takes ASCII str only)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def _flat(lists: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[0] for k, v in lists.items() if v}


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


class Csrf:
    """Issues and checks signed double-submit tokens."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or secrets.token_bytes(32)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self.secret, nonce.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def new_token(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str) -> bool:
        """True when `token` was signed with this secret."""
        nonce, _, signature = token.partition(".")
        return bool(nonce) and _same(signature, self._sign(nonce))

    def token_for(self, req: Request) -> tuple[str, bool]:
        """The request's token, and whether it is new (so the response must set the cookie)."""
        current = req.cookies.get(CSRF_COOKIE, "")
        if current and self.valid(current):
            return current, False
        return self.new_token(), True

    def check(self, req: Request) -> bool:
        """True when the POST carries the cookie's token in its form and the token is ours."""
        cookie, field = req.cookies.get(CSRF_COOKIE, ""), req.form.get(CSRF_FIELD, "")
        return bool(cookie) and _same(cookie, field) and self.valid(cookie)

    @staticmethod
    def cookie_header(token: str, req: Request) -> tuple[str, str]:
        secure = "; Secure" if req.environ.get("wsgi.url_scheme") == "https" else ""
        return ("Set-Cookie", f"{CSRF_COOKIE}={token}; Path={req.root or '/'}; HttpOnly; SameSite=Strict{secure}")
