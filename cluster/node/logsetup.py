"""Logging set-up for a node process: loguru to stderr, readable lines or one JSON object per line."""

from __future__ import annotations

import sys

from loguru import logger

LINE_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"


def configure_logging(level: str, json: bool) -> None:
    """Replace loguru's default sink. No variable values in tracebacks (diagnose=False)."""
    logger.remove()
    if json:
        logger.add(sys.stderr, level=level, serialize=True, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=LINE_FORMAT, backtrace=False, diagnose=False)
