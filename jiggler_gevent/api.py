"""`jiggler_gevent.api`: the public path of the admin API, which lives in admin/api.py. A worker never imports it."""

from .admin.api import *  # noqa: F403
from .admin.api import __all__  # noqa: F401
