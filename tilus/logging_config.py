"""Logging set-up: ``TILUS_LOG=debug|info|warning|error|off`` configures the ``tilus`` logger.

Every module logs to ``logging.getLogger(__name__)`` (children of ``tilus``). Nothing is configured
unless ``TILUS_LOG`` is set (or :func:`configure_logging` is called with a level), so an application
that sets up logging itself keeps control.
"""
from __future__ import annotations

import logging
import os
import sys

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 1,
           "none": logging.CRITICAL + 1}
_FORMAT = "[tilus %(levelname)s %(name)s] %(message)s"


class _TilusHandler(logging.StreamHandler):
    """Marker class so repeated calls replace our handler instead of stacking copies."""


def configure_logging(level: str | int | None = None) -> logging.Logger:
    """Configure the ``tilus`` logger from ``level`` or, when None, from ``$TILUS_LOG``.

    Returns the logger. Unknown level names raise ValueError listing the accepted ones.
    """
    logger = logging.getLogger("tilus")
    if level is None:
        level = os.environ.get("TILUS_LOG", "").strip()
        if not level:
            return logger
    if isinstance(level, str):
        try:
            level = _LEVELS[level.lower()]
        except KeyError:
            raise ValueError(f"TILUS_LOG={level!r}: expected one of {', '.join(sorted(_LEVELS))}") \
                from None
    for handler in list(logger.handlers):
        if isinstance(handler, _TilusHandler):
            logger.removeHandler(handler)
    handler = _TilusHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
