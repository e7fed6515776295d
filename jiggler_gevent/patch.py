"""The one place that patches gevent.

`main()` is the `gjiggler` console script and `python -m jiggler_gevent`. It patches the standard library
on the main thread, while the process is still single-threaded, and only then imports the CLI and, through
it, anything of the user's. psycopg2 is made cooperative (psycogreen) the moment anything imports it, so a
worker whose jobs never touch PostgreSQL does not load libpq (about 10 MiB of resident memory).

`select.poll().poll(0)`, a readiness check that must not wait, asks the OS directly: gevent's would start a
watcher per descriptor and make a round trip through the hub. redis-py makes such a check at every checkout
from a connection pool when hiredis is installed: answered directly, a pooled INCR costs 0.57-0.65x the CPU
(benchmarks/bench_io.py), as much as with redis-py's own parser.

`socket.sendall` tries the OS's send once before gevent's sendall: a request that fits the socket's buffer (nearly
every one a job makes) is sent without gevent's chunking, its timer arithmetic and a getsockopt per call.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import select
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import gevent.monkey
import gevent.select
import gevent.socket

_patched = False
_os_poll: Any = gevent.monkey.get_original("select", "poll")


def patch() -> None:
    """Make the blocking standard library cooperative; safe to call more than once."""
    global _patched
    if _patched:
        return
    gevent.monkey.patch_all()
    select.poll = _Poll  # type: ignore[misc,assignment]
    gevent.socket.socket.sendall = _sendall
    if "psycopg2" in sys.modules:
        _patch_psycopg()
    else:
        sys.meta_path.insert(0, _PsycopgWatcher())
    _patched = True


class _Poll:
    """`select.poll` once patched: `poll(0)` asks the OS without going through the hub; any other timeout waits
    through the hub, as gevent's poll does.

    poll(0) never yields to other greenlets (it cannot block, as in the unpatched standard library). The
    descriptors are registered with the OS's poll object at once, and with gevent's only for a poll that waits.
    """

    __slots__ = ("masks", "now")

    def __init__(self) -> None:
        self.masks: dict[int, int] = {}
        self.now = _os_poll()

    def register(self, fd: Any, eventmask: int = select.POLLIN | select.POLLPRI | select.POLLOUT) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        self.now.register(fd, eventmask)
        self.masks[fd] = eventmask

    def modify(self, fd: Any, eventmask: int) -> None:
        self.register(fd, eventmask)

    def unregister(self, fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        del self.masks[fd]
        self.now.unregister(fd)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        if timeout == 0:
            return self.now.poll(0)  # type: ignore[no-any-return]
        green = gevent.select.poll()
        for fd, mask in self.masks.items():
            green.register(fd, mask)
        return list(green.poll(timeout))


_green_socket: Any = gevent.socket.socket
_green_sendall: Any = _green_socket.sendall


def _sendall(self: Any, data: Any, flags: int = 0) -> None:
    """gevent's sendall, after one try of the OS's send for bytes on a socket that has a timeout or none."""
    if type(self) is _green_socket and type(data) is bytes and self.timeout != 0.0:
        try:
            sent = self._sock.send(data, flags)  # the socket under gevent's never blocks
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    _green_sendall(self, data, flags)


def _patch_psycopg() -> None:
    try:
        from psycogreen.gevent import patch_psycopg
    except ImportError:
        import warnings

        warnings.warn("psycopg2 is installed but psycogreen is not: queries will block the hub", stacklevel=2)
        return
    patch_psycopg()


class _PsycopgWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when psycopg2 is being imported, it wraps the real loader so that psycogreen
    patches the module as soon as it has loaded, before the importer gets it back."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "psycopg2":
            return None
        sys.meta_path.remove(self)  # once is enough, and the search below must not find this finder
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchAfterLoad(spec.loader)
        return spec


class _PatchAfterLoad(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _patch_psycopg()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


def main() -> None:
    """Entry point of `gjiggler`: patch first, then run the CLI."""
    patch()
    from .cli import main as cli_main

    cli_main()
