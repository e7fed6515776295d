"""The dashboard's HTTP basic auth: at the WSGI level (create_app(auth=...)) and through `gjiggler web`, which
refuses a non-loopback address without JIGGLER_WEB_PASSWORD unless --no-auth is given."""

import base64
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from jiggler_gevent import api
from jiggler_gevent.admin.web.auth import is_loopback
from jiggler_gevent.web import create_app
from tests import jobs
from tests.conftest import ROOT, gjiggler_command
from tests.test_web import Browser

USER, PASSWORD = "ops", "s3cret: with colon"
CHALLENGE = 'Basic realm="jiggler_gevent"'


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def browser(app: Any, authorization: str | None) -> Browser:
    """A Browser whose every request carries `authorization` (or no Authorization header at all)."""

    def with_header(environ: dict[str, Any], start_response: Any) -> Any:
        if authorization is not None:
            environ = dict(environ, HTTP_AUTHORIZATION=authorization)
        return app(environ, start_response)

    return Browser(with_header)


@pytest.fixture
def app(ns) -> Any:
    return create_app(auth=(USER, PASSWORD))


WRONG = [
    None,
    basic(USER, "nope"),
    basic("admin", PASSWORD),
    basic(USER, PASSWORD + "x"),
    basic(USER, ""),
    "Basic " + base64.b64encode(USER.encode()).decode(),  # no colon
    "Basic !!not-base64!!",
    "Bearer " + PASSWORD,
    f"Basic {USER}:{PASSWORD}",  # not encoded
]


@pytest.mark.parametrize("authorization", WRONG)
@pytest.mark.parametrize("path", ["/", "/queues", "/stats.json", "/static/style.css", "/no/such/page"])
def test_wrong_or_missing_credentials_get_401_with_a_challenge(app, authorization, path):
    page = browser(app, authorization).get(path)
    assert page.code == 401, page.text
    assert page.header("WWW-Authenticate") == CHALLENGE
    assert page.header("Content-Security-Policy")
    assert page.header("Set-Cookie") is None  # not even a CSRF cookie before authenticating
    assert "jiggler" not in page.text.lower()


def test_right_credentials_open_pages_and_static_files(app):
    web = browser(app, basic(USER, PASSWORD))
    page = web.get("/")
    assert page.code == 200 and "Dashboard" in page.text and page.header("WWW-Authenticate") is None
    css = web.get("/static/style.css")
    assert css.code == 200 and css.header("Content-Type").startswith("text/css")
    assert web.get("/stats.json").code == 200
    assert web.request("HEAD", "/queues").code == 200


def test_post_actions_need_the_password_and_still_the_csrf_token(app):
    for i in range(3):
        jobs.record.set(queue="q1").enqueue("auth", i)
    good = browser(app, basic(USER, PASSWORD))
    token = good.get("/queues").csrf()
    # a valid CSRF cookie and field, but no or a wrong password: refused, nothing cleared
    for authorization in (None, basic(USER, "nope")):
        bad = browser(app, authorization)
        bad.cookies = dict(good.cookies)
        resp = bad.request("POST", "/queues/q1", {"bulk": "clear", "csrf": token})
        assert resp.code == 401 and resp.header("WWW-Authenticate") == CHALLENGE
    assert len(api.Queue("q1")) == 3
    # the right password without a CSRF token: the CSRF check still refuses it
    resp = good.request("POST", "/queues/q1", {"bulk": "clear"})
    assert resp.code == 403 and "CSRF" in resp.text
    assert len(api.Queue("q1")) == 3
    # both: done
    resp = good.post("/queues/q1", {"bulk": "clear"})
    assert resp.code == 303 and resp.header("Location") == "/queues?flash=cleared&n=3"
    assert len(api.Queue("q1")) == 0


def test_default_user_is_admin_and_no_auth_by_default(ns):
    assert browser(create_app(), None).get("/").code == 200  # existing callers: no login of its own
    app = create_app(auth=("admin", "pw"))
    assert browser(app, basic("admin", "pw")).get("/").code == 200
    assert browser(app, basic("Admin", "pw")).get("/").code == 401


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("LocalHost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


# --- gjiggler web as a subprocess ---------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JIGGLER_WEB_PASSWORD", "JIGGLER_WEB_USER")}
    return dict(env, PYTHONPATH=str(ROOT), **extra)


def test_web_refuses_a_public_address_without_a_password(ns):
    out = subprocess.run(
        gjiggler_command(ns, "web", "--host", "0.0.0.0", "--port", "0"),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gjiggler: error:"), out.stderr
    assert "JIGGLER_WEB_PASSWORD" in lines[0] and "--no-auth" in lines[0]
    assert out.stdout == ""


class Served:
    """A `gjiggler web` subprocess; `port` is the one it printed."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(r"http://\S+:(\d+)/", line)
        assert m, f"gjiggler web did not start: {line!r}"
        self.base = f"http://127.0.0.1:{m.group(1)}"

    def get(self, path: str, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path)
        if authorization is not None:
            req.add_header("Authorization", authorization)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def serve(ns) -> Iterator[Any]:
    started: list[Served] = []

    def start(*args: str, env: dict[str, str]) -> Served:
        s = Served(gjiggler_command(ns, "web", "--port", "0", *args), env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_web_with_a_password_serves_a_public_address_behind_basic_auth(serve):
    s = serve("--host", "0.0.0.0", env=_env(JIGGLER_WEB_PASSWORD="pw", JIGGLER_WEB_USER="ops"))
    code, headers, _ = s.get("/queues")
    assert code == 401 and headers["WWW-Authenticate"] == CHALLENGE
    assert s.get("/queues", basic("ops", "wrong"))[0] == 401
    assert s.get("/queues", basic("admin", "pw"))[0] == 401
    code, _, body = s.get("/queues", basic("ops", "pw"))
    assert code == 200 and b"No queue yet" in body
    assert s.get("/static/app.js", basic("ops", "pw"))[0] == 200


def test_web_password_applies_on_loopback_too_with_the_default_user(serve):
    s = serve(env=_env(JIGGLER_WEB_PASSWORD="pw"))
    assert s.get("/")[0] == 401
    assert s.get("/", basic("admin", "pw"))[0] == 200


def test_web_no_auth_serves_a_public_address_without_a_password(serve):
    s = serve("--host", "0.0.0.0", "--no-auth", env=_env())
    code, headers, body = s.get("/queues")
    assert code == 200 and b"No queue yet" in body and "WWW-Authenticate" not in headers
