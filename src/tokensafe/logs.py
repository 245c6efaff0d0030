"""Logging for stages: one log file per job (the rule's ``log:``) plus stderr."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from pathlib import Path


def setup(log_path: str | None, name: str = "tokensafe") -> logging.Logger:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
        _log_uncaught(log_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
    logging.captureWarnings(True)
    # peft 0.21 calls a transformers API that transformers 5 deprecates; nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    return logging.getLogger(name)


def progress(logger: logging.Logger, label: str):
    """A progress callback ``(done, total)`` that logs each batch."""
    def report(done: int, total: int) -> None:
        logger.info("%s: %d/%d", label, done, total)
    return report


def _log_uncaught(log_path: str) -> None:
    """Also write an uncaught exception's traceback to the job's log (else it reaches only stderr)."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, KeyboardInterrupt):
            with open(log_path, "a") as f:
                f.write("".join(traceback.format_exception(exc_type, exc, tb)))
        previous(exc_type, exc, tb)

    sys.excepthook = hook
