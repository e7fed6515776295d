"""Benchmarks of jiggler_gevent against Celery, Dramatiq, Huey and RQ: `python -m benchmarks.run --help`."""
