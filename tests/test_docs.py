"""The documentation keeps up with the code: docs/internals.md lists every module of the package, and nothing else.

(The rest of the site is checked by `mkdocs build --strict` in tests/run: a broken link, a missing page, or a
reference page that the code can no longer generate fails the checks.)
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jiggler_gevent"
INTERNALS = ROOT / "docs" / "internals.md"


def package_modules() -> list[str]:
    """Every Python module and Lua script of the package with any content, relative to jiggler_gevent/."""
    return sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.suffix in (".py", ".lua") and "__pycache__" not in path.parts and path.stat().st_size
    )


def listed_modules() -> set[str]:
    """The paths that the "Every module" section of the internals page lists, one per line of its tree."""
    text = INTERNALS.read_text(encoding="utf-8")
    section = text.split("## Every module", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^ +([\w/]+\.(?:py|lua)) ", section, re.MULTILINE))


def test_internals_lists_every_module_of_the_package() -> None:
    missing = [m for m in package_modules() if m not in listed_modules()]
    assert not missing, f"docs/internals.md does not list {missing}: add a line for each under 'Every module'"


def test_internals_lists_no_module_that_does_not_exist() -> None:
    stale = sorted(listed_modules() - set(package_modules()))
    assert not stale, f"docs/internals.md lists {stale}, which the package no longer has"
