"""Django integration: add "jiggler_gevent.contrib.django" to INSTALLED_APPS, put the settings in one
`JIGGLER` dict (keys mirror the `gjiggler worker` options) and run `python manage.py gjiggler`.

Importing this package or its AppConfig imports neither gevent nor redis: a Django web process that only
enqueues stays unpatched, and the worker patches gevent before Django is loaded (see bootstrap.py).
"""
