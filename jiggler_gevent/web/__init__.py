"""`jiggler_gevent.web`: the public path of the web dashboard, which lives in admin/web/.

from jiggler_gevent.web import create_app
application = create_app()          # any WSGI server; honours SCRIPT_NAME for a prefix
"""

from ..admin.web import Dashboard, create_app

__all__ = ["Dashboard", "create_app"]
