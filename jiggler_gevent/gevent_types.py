"""Types for the parts of gevent and greenlet that jiggler_gevent uses, as Protocols.

gevent and greenlet ship no type information (no py.typed marker, no stubs), so mypy sees everything they
export as Any (setup.cfg sets ignore_missing_imports for them). The Protocols here describe, structurally,
exactly the methods and attributes the package calls on the objects gevent and greenlet return: annotate a
variable or attribute with one of them, or cast a gevent call's result to one, and mypy checks every use.
They are types only: nothing here is a gevent class, and isinstance() must keep using gevent's own.

This module imports nothing from gevent or greenlet, so importing it loads neither (code that only enqueues
jobs never loads gevent), and it sits in the lowest import layer: any module may use it.
"""

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, TypeVar, TypeVarTuple

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class RawGreenlet(Protocol):
    """A `greenlet.greenlet`: any greenlet, the hub and gevent's Greenlet included (`gevent.getcurrent()`)."""

    @property
    def dead(self) -> bool:
        """True once the greenlet has finished (returned or raised)."""
        ...

    def throw(
        self,
        typ: type[BaseException] | BaseException = ...,
        val: object = ...,
        tb: TracebackType | None = ...,
        /,
    ) -> object:
        """Switch to the greenlet and raise the exception there (an instance may be given as `typ`)."""
        ...


class Greenlet(RawGreenlet, Protocol):
    """A `gevent.Greenlet`, as `gevent.spawn` returns it."""

    def kill(
        self,
        exception: type[BaseException] | BaseException = ...,
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Raise `exception` (GreenletExit by default) in it; with `block`, wait up to `timeout` for it to end."""
        ...

    def join(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` seconds (None: no limit) for it to finish."""
        ...


class Watcher(Protocol):
    """A watcher of gevent's event loop: a timer (`loop.timer`) or a check watcher (`loop.check`)."""

    def start(self, callback: Callable[[*_Ts], object], *args: *_Ts) -> None:
        """Call `callback(*args)` from the loop each time the watcher fires."""
        ...

    def stop(self) -> None:
        """Stop watching; `start` may be called again."""
        ...

    def close(self) -> None:
        """Stop and release the watcher for good."""
        ...


class AsyncWatcher(Watcher, Protocol):
    """An async watcher (`loop.async_`): fires in the loop after `send()`, which any thread may call."""

    def send(self) -> None:
        """Wake the loop and make the watcher fire in it; safe from any thread."""
        ...


class Loop(Protocol):
    """The hub's event loop (`hub.loop`)."""

    def async_(self, ref: bool = True, priority: int | None = None) -> AsyncWatcher:
        """A new, unstarted async watcher."""
        ...

    def timer(self, after: float, repeat: float = 0.0, ref: bool = True, priority: int | None = None) -> Watcher:
        """A new, unstarted timer that fires `after` seconds after it is started (then every `repeat`)."""
        ...

    def check(self, ref: bool = True, priority: int | None = None) -> Watcher:
        """A new, unstarted check watcher: it fires once per loop pass, after the loop has polled."""
        ...

    def run_callback(self, func: Callable[[*_Ts], object], *args: *_Ts) -> object:
        """Call `func(*args)` at the start of the next loop pass; returns the callback's handle."""
        ...


class Hub(RawGreenlet, Protocol):
    """gevent's hub (`gevent.get_hub()`): the greenlet that runs the event loop."""

    @property
    def loop(self) -> Loop:
        """The event loop the hub runs."""
        ...

    def wait(self, watcher: Watcher) -> None:
        """Switch to the hub until the unstarted `watcher` fires (it is started and stopped here)."""
        ...


class Event(Protocol):
    """A `gevent.event.Event`: a flag greenlets can wait for."""

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        ...

    def clear(self) -> None:
        """Reset the flag."""
        ...

    def is_set(self) -> bool:
        """True while the flag is set."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: no limit) for the flag; returns it."""
        ...


class BoundedSemaphore(Protocol):
    """A `gevent.lock.BoundedSemaphore`: a semaphore that may not be released past its initial value."""

    counter: int  # how many times it can be acquired now

    def wait(self, timeout: float | None = None) -> int:
        """Wait, without acquiring, until it can be acquired (or `timeout` passes); returns `counter`."""
        ...

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire it, waiting only if `blocking` (up to `timeout`); True when acquired."""
        ...

    def release(self) -> int:
        """Release it once; returns `counter`. ValueError when released more often than acquired."""
        ...


class Queue(Protocol[_T]):
    """A `gevent.queue.Queue` of items of type `T`."""

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        """Append `item` (the queue used here is unbounded: it never waits)."""
        ...

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        """Remove and return the oldest item, waiting for one if `block`."""
        ...


class Timeout(Protocol):
    """A `gevent.Timeout`: a BaseException that is also a timer raising it (or another exception) when it fires."""

    timer: object  # the loop's timer; gevent.timeout._FakeTimer once the Timeout is closed

    def start(self) -> None:
        """Arm the timer in the current greenlet."""
        ...

    def close(self) -> None:
        """Disarm the timer and release it for good."""
        ...


class WSGIServer(Protocol):
    """A `gevent.pywsgi.WSGIServer`."""

    @property
    def address(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """The address it listens on, once started: (host, port), or (host, port, flowinfo, scope_id) for IPv6."""
        ...

    @property
    def server_port(self) -> int:
        """The port it listens on, once started."""
        ...

    def start(self) -> None:
        """Bind and start accepting connections in the background."""
        ...

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting connections and wait up to `timeout` seconds for the requests being handled."""
        ...

    def serve_forever(self, stop_timeout: float | None = None) -> None:
        """Start (unless started) and block until `stop` is called."""
        ...
