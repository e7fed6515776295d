"""The exceptions user code may catch, importable without loading Redis, gevent or the worker."""


class EnqueueError(RuntimeError):
    """A job could not be pushed to Redis; nothing was pushed."""


class JobTimeout(BaseException):
    """Raised in a job that ran past its timeout. A BaseException, so `except Exception` cannot swallow it."""

    def __init__(self, message: str, seconds: float = 0.0) -> None:
        super().__init__(message)
        self.seconds = seconds


class ConfigError(ValueError):
    """Settings or options that cannot work (a module -r cannot import, a bad Django setting): the CLI
    prints the message and exits with code 2, a usage error."""
