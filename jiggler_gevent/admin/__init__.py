"""The admin side: what operators load to read and change state (`api`, and the `web` dashboard on it).

It sits on the app side and the shared modules, and never imports the worker (server/); a worker never
imports it. Public paths: `jiggler_gevent.api` and `jiggler_gevent.web`.
"""
