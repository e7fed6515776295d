"""The release build: `python -m build` makes an sdist and a wheel (built from the sdist) that pass
`twine check --strict`; the wheel holds every file of the package (Lua scripts, the dashboard's templates and static
files, py.typed) and the license; installed into a fresh virtualenv with the pinned dependencies of constraints.txt,
its `gjiggler` shows the version and runs a job end to end on the test Redis.

The build runs on a copy of the working tree, so the tree itself gets no build/ or egg-info written by the test.
"""

import email.parser
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import redis

from jiggler_gevent import __version__, config
from tests.conftest import ROOT, wait_for

# What a copy of the tree leaves out (the .gitignore'd directories, and git's own).
IGNORED = (".git", ".venv*", ".tox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")
IGNORED += ("test-artifacts", "node_modules")
SDIST_TOP = {"README.md", "LICENSE", "CHANGELOG.md", "setup.cfg", "setup.py", "pyproject.toml", "PKG-INFO"}


def run(args: list, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; fail with its output if it exits non-zero."""
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, args))} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def package_files() -> set[str]:
    """Every file of the package in the source tree, as paths inside a wheel."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "jiggler_gevent").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) built by `python -m build` from a copy of the working tree."""
    base = tmp_path_factory.mktemp("release")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    run([sys.executable, "-m", "build", "--outdir", base / "dist", source])
    wheels = list((base / "dist").glob("*.whl"))
    sdists = list((base / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list((base / "dist").iterdir())
    return wheels[0], sdists[0]


def test_the_wheel_and_sdist_pass_twine_check_and_hold_the_package(dists: tuple[Path, Path]) -> None:
    wheel, sdist = dists
    assert wheel.name == f"jiggler_gevent-{__version__}-py3-none-any.whl"
    assert sdist.name == f"jiggler_gevent-{__version__}.tar.gz"
    out = run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist])
    assert out.stdout.count("PASSED") == 2, out.stdout

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"jiggler_gevent-{__version__}.dist-info"
        metadata = email.parser.Parser().parsestr(z.read(f"{info}/METADATA").decode())
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    # The wheel is the package's files, exactly: every Lua script, template, static file and py.typed included.
    assert {n for n in names if not n.startswith(info + "/")} == package_files()
    for wanted in ("jiggler_gevent/py.typed", "jiggler_gevent/scripts/push.lua", "jiggler_gevent/scripts/settle.lua"):
        assert wanted in names
    assert any(n.startswith("jiggler_gevent/admin/web/templates/") and n.endswith(".html") for n in names)
    assert any(n.startswith("jiggler_gevent/admin/web/static/") and n.endswith(".css") for n in names)
    assert f"{info}/licenses/LICENSE" in names
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert "Programming Language :: Python :: 3.13" in metadata.get_all("Classifier")
    assert {u.split(",")[0] for u in metadata.get_all("Project-URL")} >= {"Documentation", "Changelog", "Source"}
    assert "gjiggler = jiggler_gevent.patch:main" in entry_points

    top = f"jiggler_gevent-{__version__}"
    with tarfile.open(sdist) as t:
        members = {m.name.removeprefix(top + "/") for m in t.getmembers() if m.isfile()}
    assert SDIST_TOP <= members
    assert package_files() <= members
    assert not any(m.startswith("tests/") for m in members)  # MANIFEST.in: the suite stays in the repository


def test_the_installed_wheel_runs_a_job(dists: tuple[Path, Path], ns: config.Config, tmp_path: Path) -> None:
    wheel, _ = dists
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python, gjiggler = venv / "bin" / "python", venv / "bin" / "gjiggler"
    run([python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel], timeout=600)

    # Nothing of the source tree on the path: the venv's own copy is what runs.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    version = run([gjiggler, "--version"], env=env, cwd=tmp_path)
    assert version.stdout.strip() == f"gjiggler, version {__version__}"

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "release_jobs.py").write_text(
        textwrap.dedent(
            """
            import redis

            import jiggler_gevent
            from jiggler_gevent import job


            @job
            def mark(url, key):
                redis.Redis.from_url(url).set(key, jiggler_gevent.__file__)
            """
        )
    )
    key = f"{ns.namespace}:t:release"
    enqueue = (
        "import sys, release_jobs, jiggler_gevent as j;"
        "j.configure(redis_url=sys.argv[1], namespace=sys.argv[2]);"
        "print(release_jobs.mark.enqueue(sys.argv[1], sys.argv[3]))"
    )
    run([python, "-c", enqueue, ns.url, ns.namespace, key], env=env, cwd=jobs)

    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [gjiggler, "worker", "-r", "release_jobs", "--redis-url", ns.url, "--namespace", ns.namespace],
            env=env,
            cwd=jobs,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            client = redis.Redis.from_url(ns.url, decode_responses=True)
            try:
                ran_from = wait_for(lambda: client.get(key), 30, "the installed worker to run the job")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nworker output:\n{log_path.read_text(errors='replace')}") from None
            assert str(ran_from).startswith(str(venv / "lib")), ran_from
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0, log_path.read_text(errors="replace")
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
