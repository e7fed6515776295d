"""A Flask application with jiggler_gevent: `init_app` reads the JIGGLER_* keys of its config and mounts the
dashboard at /jiggler, shown only to a signed-in admin (the application's own check, on its own session).

    JIGGLER_REDIS_URL=redis://127.0.0.1:6379/0 flask --app examples.flask_app.app run
    gjiggler worker -r examples.flask_app.jobs
"""

import os
from typing import Any

from flask import Flask, jsonify, request, session

from jiggler_gevent.contrib.flask import init_app

from .jobs import send_welcome


def make_app(settings: dict[str, Any] | None = None) -> Flask:
    """The application; `settings` update its config (the environment's JIGGLER_* and SECRET_KEY otherwise)."""
    app = Flask(__name__)
    app.config["JIGGLER_REDIS_URL"] = os.environ.get("JIGGLER_REDIS_URL", "redis://127.0.0.1:6379/0")
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "change me")
    app.config.update(settings or {})
    init_app(app, allow=lambda: bool(session.get("admin")))

    @app.post("/signup")
    def signup() -> Any:
        email = (request.get_json(silent=True) or {}).get("email", "")
        return jsonify(jid=send_welcome.enqueue(email))

    @app.post("/login")
    def login() -> Any:  # stands for the application's real login
        session["admin"] = bool((request.get_json(silent=True) or {}).get("admin"))
        return jsonify(admin=session["admin"])

    return app
