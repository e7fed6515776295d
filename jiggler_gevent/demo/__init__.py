"""`gjiggler demo`: example jobs (jobs.py), the run that shows them (run.py), and a private Redis for when
none answers (local_redis.py). Not part of the worker: a worker loads only demo.jobs, and only when asked to.
"""
