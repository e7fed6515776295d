"""The Django app: applies `settings.JIGGLER` to jiggler_gevent when Django starts."""

from django.apps import AppConfig


class JigglerConfig(AppConfig):
    """Makes `settings.JIGGLER` the settings in force, so views and `manage.py shell` enqueue without configure()."""

    name = "jiggler_gevent.contrib.django"
    label = "jiggler_gevent"
    verbose_name = "jiggler_gevent"

    def ready(self) -> None:
        from .conf import configure_from_settings

        configure_from_settings()
