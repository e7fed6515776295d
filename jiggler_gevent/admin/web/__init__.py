"""The web dashboard: a plain WSGI app (`create_app()`), served by `gjiggler web` or mounted elsewhere.

    from jiggler_gevent.web import create_app
    application = create_app()          # any WSGI server; honours SCRIPT_NAME for a prefix

Django: `path("jiggler/", include("jiggler_gevent.contrib.django.urls"))` (staff users only).
"""

from .app import Dashboard, create_app

__all__ = ["Dashboard", "create_app"]
