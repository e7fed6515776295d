"""Mount the dashboard: `path("jiggler/", include("jiggler_gevent.contrib.django.urls"))`."""

from django.urls import re_path

from . import views

app_name = "jiggler_gevent"
urlpatterns = [re_path(r"^(?P<path>.*)$", views.dashboard, name="dashboard")]
