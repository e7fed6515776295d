"""Logging set-up for the `gjiggler` commands: one format, to stderr."""

import logging
import sys

LOG_FORMAT = "%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool) -> None:
    """Log to stderr at INFO, or DEBUG when `verbose`."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
