"""The worker side of the Django integration: what `gjiggler worker --django` does after gevent is patched.

It sets Django up, imports the `jobs` module of every installed app (before the -r modules), and adds
CloseConnections to the server chain. Django keeps its database connections in a thread local, which
gevent's patch makes greenlet-local: each job greenlet opens at most one connection per database alias.
Either PostgreSQL driver is cooperative here, as both are imported after the patch: psycopg2 through
psycogreen (patch.py), psycopg 3 by itself (it waits with the patched `select`).
"""

import os

from django.db import close_old_connections, connections

from ... import config, middleware
from ...errors import ConfigError
from ...middleware import JobContext, ServerMiddleware
from ...periodic import PeriodicError


class CloseConnections(ServerMiddleware):
    """Closes stale database connections before a job, and the job's own connections after it.

    Django keeps a connection per greenlet; closing it after each job keeps a job from inheriting the
    previous job's session state (an open transaction, SET values) on the same worker greenlet.
    """

    def before_process(self, ctx: JobContext) -> None:
        close_old_connections()

    def after_process(self, ctx: JobContext) -> None:
        connections.close_all()


def uses_tasks_backend() -> bool:
    """True when settings.TASKS names the jiggler_gevent tasks backend (contrib/django/tasks.py)."""
    from django.conf import settings

    backends = getattr(settings, "TASKS", None) or {}
    return any(
        isinstance(params, dict) and params.get("BACKEND") == "jiggler_gevent.contrib.django.tasks.JigglerBackend"
        for params in backends.values()
    )


def setup_worker() -> None:
    """Set Django up from DJANGO_SETTINGS_MODULE for this worker process and load the apps' jobs."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise ConfigError(
            "--django needs DJANGO_SETTINGS_MODULE in the environment (`python manage.py gjiggler` sets it)"
        )
    import django
    from django.utils.module_loading import autodiscover_modules

    from ...server.process import import_user_modules

    import_user_modules(())  # puts the current directory on sys.path, as for -r
    worker_cfg = config.current()
    django.setup()
    # The app's ready() applied settings.JIGGLER; the worker's command line (built from it) wins.
    config.configure(redis_url=worker_cfg.url, namespace=worker_cfg.namespace)
    try:
        autodiscover_modules("jobs")
    except ImportError as exc:
        raise ConfigError(f"an installed app's jobs module cannot be imported: {exc}") from exc
    except PeriodicError as exc:
        raise ConfigError(f"an installed app's jobs module declares a periodic job that cannot work: {exc}") from None
    if uses_tasks_backend():
        from . import task_run  # noqa: F401  (registers the job that runs Django tasks)
    if not any(isinstance(m, CloseConnections) for m in middleware.server.entries):
        middleware.server.add(CloseConnections())
