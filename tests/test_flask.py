"""Flask: init_app configures from app.config and mounts the dashboard behind the application's own access check;
FastAPI: the dashboard mounted through a2wsgi behind a dependency of the application. Real frameworks, real Redis."""

import pytest
from fastapi.testclient import TestClient
from flask import Flask, session

from examples.fastapi_app.app import make_app as make_fastapi_app
from examples.flask_app.app import make_app as make_flask_app
from jiggler_gevent import api, config
from jiggler_gevent.contrib.flask import init_app


def test_the_flask_example_enqueues_and_shows_the_dashboard_only_to_whom_its_check_allows(ns):
    app = make_flask_app({"JIGGLER_REDIS_URL": ns.url, "JIGGLER_NAMESPACE": ns.namespace, "SECRET_KEY": "t"})
    assert config.current().namespace == ns.namespace, "init_app configured jiggler_gevent from app.config"
    client = app.test_client()
    jid = client.post("/signup", json={"email": "a@example.org"}).get_json()["jid"]
    assert [j.jid for j in api.Queue("default")] == [jid]

    denied = client.get("/jiggler/queues")
    assert denied.status_code == 403 and b"access check refused" in denied.data
    client.post("/login", json={"admin": False})
    assert client.get("/jiggler/queues").status_code == 403, "a signed-in user who is not an admin"
    client.post("/login", json={"admin": True})
    page = client.get("/jiggler/queues")
    assert page.status_code == 200 and b"default" in page.data, page.data[:500]
    assert client.get("/jiggler/").status_code == 200


def test_init_app_refuses_a_dashboard_without_an_access_check_and_mounts_none_when_told(ns):
    app = Flask(__name__)
    app.config.update(JIGGLER_REDIS_URL=ns.url, JIGGLER_NAMESPACE=ns.namespace)
    with pytest.raises(ValueError, match="needs an access check"):
        init_app(app)
    app.config["JIGGLER_DASHBOARD_PATH"] = None
    init_app(app)
    assert app.test_client().get("/jiggler/").status_code == 404


def test_the_allow_callable_runs_in_the_requests_own_context(ns):
    app = Flask(__name__)
    app.config.update(JIGGLER_REDIS_URL=ns.url, JIGGLER_NAMESPACE=ns.namespace, SECRET_KEY="t")
    seen = []

    def allow() -> bool:
        from flask import request

        seen.append((request.headers.get("X-Team"), session.get("user")))
        return request.headers.get("X-Team") == "ops"

    init_app(app, allow=allow)
    client = app.test_client()
    assert client.get("/jiggler/", headers={"X-Team": "sales"}).status_code == 403
    assert client.get("/jiggler/", headers={"X-Team": "ops"}).status_code == 200
    assert seen == [("sales", None), ("ops", None)]


def test_the_fastapi_example_enqueues_with_aenqueue_and_guards_the_mounted_dashboard(ns):
    client = TestClient(make_fastapi_app(ns.url, ns.namespace, token="s3cret"))
    jid = client.post("/signup", json={"email": "b@example.org"}).json()["jid"]
    assert [j.jid for j in api.Queue("default")] == [jid]
    assert client.get("/jiggler/queues").status_code == 403
    assert client.get("/jiggler/queues", headers={"Authorization": "Bearer wrong"}).status_code == 403
    page = client.get("/jiggler/queues", headers={"Authorization": "Bearer s3cret"})
    assert page.status_code == 200 and "default" in page.text
