"""The one place that patches gevent.

`main()` is the `gjiggler` console script and `python -m jiggler_gevent`. It patches the standard library
(and psycopg2 through psycogreen when psycopg2 is importable) on the main thread, while the process is
still single-threaded, and only then imports the CLI and, through it, anything of the user's.
"""
import gevent.monkey

_patched = False


def patch() -> None:
    """Make the blocking standard library cooperative; safe to call more than once."""
    global _patched
    if _patched:
        return
    gevent.monkey.patch_all()
    _patch_psycopg()
    _patched = True


def _patch_psycopg() -> None:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return
    try:
        from psycogreen.gevent import patch_psycopg
    except ImportError:
        import warnings

        warnings.warn("psycopg2 is installed but psycogreen is not: queries will block the hub")
        return
    patch_psycopg()


def main() -> None:
    """Entry point of `gjiggler`: patch first, then run the CLI."""
    patch()
    from .cli import main as cli_main

    cli_main()
