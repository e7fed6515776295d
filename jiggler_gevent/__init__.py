"""jiggler_gevent: background jobs for ordinary blocking Python code, on gevent and Redis.

Importing this package touches no socket, ssl or thread: the `gjiggler` entry point (patch.py) imports
it before it patches gevent.
"""
__version__ = "0.1.0"

from .config import configure  # noqa: E402
from .job import job  # noqa: E402

__all__ = ["job", "configure", "__version__"]
