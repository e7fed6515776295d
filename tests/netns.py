"""Worker "hosts" in Linux network namespaces, for the partition test: each its own address, cut off at will.

A bridge in the root namespace carries the gateway address (10.213.X.1/24, a private /24 no interface of this
machine uses yet); each host is a namespace joined to it by a veth pair, its end named eth0 with address
10.213.X.(10+i). A Redis bound to the gateway address is reachable from every host, and `Host.cut()` sets the
host's eth0 down, so it loses Redis while its processes go on running. Names carry this process's pid (jgp<pid>…)
so that runs at the same time do not collide; leftovers of runs that died are removed at the next setup. The
filesystem is shared, so jobs can record their runs in files whatever the network does.

Needs the `ip` command (iproute2) and root (CAP_NET_ADMIN); without them the test fails with what is missing.
"""

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from jiggler_gevent import config
from tests.conftest import Worker

PREFIX = "jgp"
LOCK_PATH = "/tmp/jiggler-netns.lock"  # held while a run picks its /24 and claims it on its bridge
SUBNET = "10.213"


def require_ip() -> None:
    """Fail (never skip) with what is missing when namespaces cannot be made here."""
    if shutil.which("ip") is None:
        pytest.fail("the partition test needs the ip command (apt-get install iproute2)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the partition test needs root (CAP_NET_ADMIN) to make network namespaces", pytrace=False)


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run `ip ARGS` (inside `netns` if given); a failure raises with ip's own message."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Host:
    """One network namespace with its own address on the bridge."""

    name: str
    address: str

    def cut(self) -> None:
        """Take the host off the network: its interface goes down, its sockets stay open and get no answer."""
        ip("link", "set", "eth0", "down", netns=self.name)

    def restore(self) -> None:
        """Put the host back on the network."""
        ip("link", "set", "eth0", "up", netns=self.name)

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace (`ip netns exec` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.name, *argv]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> None:
    """Delete the namespaces and bridges of earlier runs whose process is gone (killed before its teardown)."""
    pattern = re.compile(rf"^{PREFIX}(\d+)(h\d+|v\d+|br)$")
    namespaces = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    links = re.findall(r"^\d+: ([^:@\s]+)", ip("-o", "link", "show"), flags=re.M)
    for name in namespaces + links:
        m = pattern.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        if m.group(2).startswith("h"):
            ip("netns", "del", name, check=False)
        else:
            ip("link", "del", name, check=False)


def _free_octet() -> int:
    """A third octet X such that no interface has an address in 10.213.X.0/24 (start from the pid: spread)."""
    used = {int(x) for x in re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", ip("-o", "-4", "addr", "show"))}
    start = os.getpid() % 250
    for i in range(250):
        octet = 1 + (start + i) % 250
        if octet not in used:
            return octet
    raise AssertionError(f"no free /24 left in {SUBNET}.0.0/16")


class Network:
    """A bridge with the gateway address and the hosts joined to it; `close()` removes all of it."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.hosts: list[Host] = []
        with open(LOCK_PATH, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            remove_leftovers()
            self.prefix = f"{SUBNET}.{_free_octet()}"
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: where the hosts reach Redis."""
        return f"{self.prefix}.1"

    def add_host(self) -> Host:
        """A new namespace on the bridge, its interface up."""
        i = len(self.hosts) + 1
        host = Host(f"{self.tag}h{i}", f"{self.prefix}.{10 + i}")
        ip("netns", "add", host.name)
        self.hosts.append(host)
        veth = f"{self.tag}v{i}"
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
        ip("link", "set", veth, "master", self.bridge, "up")
        ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=host.name)
        ip("link", "set", "eth0", "up", netns=host.name)
        ip("link", "set", "lo", "up", netns=host.name)
        return host

    def heal(self) -> None:
        """Every host back on the network (before its processes are killed: their sockets can then close, and
        no orphaned connection keeps a namespace alive)."""
        for host in self.hosts:
            ip("link", "set", "eth0", "up", netns=host.name, check=False)

    def close(self) -> None:
        """Delete the veth pairs, the namespaces and the bridge."""
        for i, host in enumerate(self.hosts, 1):
            ip("link", "del", f"{self.tag}v{i}", check=False)
            ip("netns", "del", host.name, check=False)
        ip("link", "del", self.bridge, check=False)


class HostWorker(Worker):
    """A `gjiggler worker` process inside a host's namespace, told its host's name in $JIGGLER_TEST_HOST."""

    def __init__(self, host: Host, redis_url: str, cfg: config.Config, args: Sequence[str]) -> None:
        args = ["--redis-url", redis_url, "--namespace", cfg.namespace, *args]
        self.launch(args, f"worker-{cfg.namespace}-{host.name}", {"JIGGLER_TEST_HOST": host.name}, host.command)
