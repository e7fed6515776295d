"""The dashboard inside a Django project, for staff users only.

    urlpatterns = [path("jiggler/", include("jiggler_gevent.contrib.django.urls")), ...]

The view hands the request to the dashboard's WSGI app with SCRIPT_NAME set to the mount point, so the
app's links stay under it. The app checks its own CSRF token (signed with a key derived from
settings.SECRET_KEY) on every POST, hence csrf_exempt here; login goes through Django's admin login
unless settings.JIGGLER_WEB_LOGIN_URL names another.
"""

import hashlib
import hmac
import io
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

_app: Any | None = None


def dashboard_app() -> Any:
    """The WSGI app, created once, its CSRF secret derived from SECRET_KEY (so it survives restarts)."""
    global _app
    if _app is None:
        from ...admin.web import create_app

        secret = hmac.new(settings.SECRET_KEY.encode(), b"jiggler_gevent.web.csrf", hashlib.sha256).digest()
        _app = create_app(secret)
    return _app


def wsgi_environ(request: HttpRequest, path: str) -> dict[str, Any]:
    """A WSGI environ for the app: Django's META, the form, and the mount point as SCRIPT_NAME."""
    # Django has parsed the form whatever its encoding; the app reads it url-encoded.
    body = urlencode(list(request.POST.lists()), doseq=True).encode() if request.method == "POST" else b""
    environ = {k: v for k, v in request.META.items() if isinstance(k, str)}
    full = request.path
    prefix = full[: len(full) - len(path)] if path and full.endswith(path) else full
    environ.update(
        {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": prefix.rstrip("/"),
            "PATH_INFO": ("/" + path).encode("utf-8", "surrogateescape").decode("latin-1"),  # as WSGI (PEP 3333)
            "QUERY_STRING": request.META.get("QUERY_STRING", ""),
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": request.scheme,
            "wsgi.errors": io.StringIO(),
        }
    )
    return environ


def _call(environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = status, headers

    body = b"".join(dashboard_app()(environ, start_response))
    return int(captured["status"].split()[0]), captured["headers"], body


def _staff_only(view: Any) -> Any:
    login_url = getattr(settings, "JIGGLER_WEB_LOGIN_URL", None) or "admin:login"
    return staff_member_required(view, login_url=login_url)


def _serve(request: HttpRequest, path: str = "") -> HttpResponse:
    """One dashboard page or action, through the WSGI app."""
    status, headers, body = _call(wsgi_environ(request, path))
    response = HttpResponse(body, status=status)
    for name, value in headers:
        if name.lower() != "content-length":
            response.headers[name] = value
    return response


# The view to route to: staff only; CSRF is checked by the app itself (its own signed token).
dashboard = csrf_exempt(_staff_only(_serve))
