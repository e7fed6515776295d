"""The example's job: the worker runs it with `gjiggler worker -r examples.flask_app.jobs`."""

from jiggler_gevent import job


@job(queue="default", retries=3)
def send_welcome(email: str) -> None:
    """Send the welcome mail (the example only prints it)."""
    print(f"welcome, {email}")
