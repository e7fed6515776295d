"""Settings of the example shop: PostgreSQL through the usual PG* variables, Redis through REDIS_URL."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "jiggler_gevent.contrib.django",  # 1. the app: settings below, `manage.py gjiggler`
    "orders",
]
MIDDLEWARE: list = []
ROOT_URLCONF = "shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        # psycopg 3 when it is installed, else psycopg2: the worker makes either cooperative.
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "jiggler_shop"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}
# Django's own pool (psycopg 3 and psycopg_pool), shared by the worker's greenlets: SHOP_DB_POOL=N keeps at most
# N connections, open across jobs, instead of one per running job.
if os.environ.get("SHOP_DB_POOL"):
    DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 1, "max_size": int(os.environ["SHOP_DB_POOL"])}}

# 2. One dict; its keys mirror `gjiggler worker` options (--redis-url, --namespace, -c, -q, -t, ...).
JIGGLER = {
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "NAMESPACE": os.environ.get("JIGGLER_NAMESPACE", "shop"),
    "CONCURRENCY": 20,
    "QUEUES": ["default,3", "reports,1"],
    "TIMEOUT": 10,
    # An enqueue inside a transaction is pushed when it commits, never if it rolls back.
    "ENQUEUE_ON_COMMIT": os.environ.get("JIGGLER_ENQUEUE_ON_COMMIT", "1") == "1",
}

# 3. Django's tasks (django.tasks; the django_tasks backport before Django 6) run by the same worker.
TASKS = {
    "default": {
        "BACKEND": "jiggler_gevent.contrib.django.tasks.JigglerBackend",
        "QUEUES": ["default", "reports"],
        "OPTIONS": {"RESULT_TTL": 3600},  # how long a result stays readable after its task ended
    }
}
