"""The exceptions user code may catch, importable without loading Redis, gevent or the worker."""


class EnqueueError(RuntimeError):
    """A job could not be pushed to Redis. The message names the job and carries Redis' reason (the connection
    error, or the refusal: "OOM command not allowed ...", "READONLY ..."): then nothing was pushed. With
    `configure(wait_replicas=N)` it is also raised when the push was written to the master but fewer than N
    replicas acknowledged it in time: the job may run, but a failover could lose it, so retrying may push it twice."""


class JobTimeout(BaseException):
    """Raised in a job that ran past its timeout. A BaseException, so `except Exception` cannot swallow it."""

    def __init__(self, message: str, seconds: float = 0.0) -> None:
        super().__init__(message)
        self.seconds = seconds


class ConfigError(ValueError):
    """Settings or options that cannot work (a module -r cannot import, a bad Django setting): the CLI
    prints the message and exits with code 2, a usage error."""


class CancelJob(BaseException):
    """Raised in a running job that was cancelled, at its next safe point. A BaseException, so `except
    Exception` cannot swallow it. `stop_within`: seconds it may wait for a safe point before the job is
    given up on (as a timeout that finds none is)."""

    def __init__(self, message: str, stop_within: float = 1.0) -> None:
        super().__init__(message)
        self.stop_within = stop_within


class CancelRefused(RuntimeError):
    """What `api.Job(jid).cancel()` raises for a job it cannot cancel: with `wire="sidekiq"`, one that a process
    other than a jiggler worker of the namespace (a Ruby Sidekiq process) is running, which never reads jiggler's
    cancellations. Nothing is recorded."""


class JobFailed(Exception):
    """What `api.Job(jid).result()` raises for a job that failed for good (dead, or out of retries)."""

    def __init__(self, jid: str, error_class: str, error_message: str) -> None:
        super().__init__(f"job {jid} failed: {error_class}: {error_message}")
        self.jid, self.error_class, self.error_message = jid, error_class, error_message


class JobCancelled(Exception):
    """What `api.Job(jid).result()` raises for a job that was cancelled."""

    def __init__(self, jid: str) -> None:
        super().__init__(f"job {jid} was cancelled")
        self.jid = jid
