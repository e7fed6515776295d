"""jiggler_gevent: background jobs for ordinary blocking Python code, on gevent and Redis.

The app side: what user code imports. Importing this package touches no socket, ssl or thread, and loads
nothing of the worker (server/) or the admin side (admin/): the `gjiggler` entry point (patch.py) imports it
before it patches gevent.
"""

__version__ = "0.2.0"

from .batch import Batch
from .config import configure
from .errors import EnqueueError, JobTimeout
from .iterable import progress
from .job import job
from .periodic import periodic
from .workflow import chain, chord, group

__all__ = [
    "job",
    "configure",
    "periodic",
    "Batch",
    "chain",
    "group",
    "chord",
    "progress",
    "JobTimeout",
    "EnqueueError",
    "__version__",
]
