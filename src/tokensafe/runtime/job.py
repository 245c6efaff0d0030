"""What a stage job does first (:func:`start_job`, the first line of every ``workflow/scripts/*.py``): hand itself
to a local run's job server when one is up, else set up its log (the rule's ``log:`` file plus stderr) and pause
the garbage collector for its start-up (:func:`end_startup` resumes it). docs/architecture.md, "How a job runs"."""

from __future__ import annotations

import atexit
import gc
import logging
import sys
import traceback
import warnings
from pathlib import Path

from tokensafe.runtime import jobserver
from tokensafe.runtime.numerics import describe_cpu_numerics


def start_job(log_path: str | None, name: str = "tokensafe") -> logging.Logger:
    """First call of every stage script, before its other imports: hand the job to a local run's job server when
    one is up (:func:`tokensafe.runtime.jobserver.delegate`: this process then exits with the job's status, and
    the server's forked child runs the script again, where this call returns), else set up logging and pause
    the collector here (:func:`_pause_collector`)."""
    jobserver.delegate()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
        _log_uncaught(log_path)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True
    )
    logging.captureWarnings(True)
    # peft 0.21 calls a transformers API that transformers 5 deprecates; nothing for a user to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    _pause_collector()
    logger = logging.getLogger(name)
    logger.info("cpu numerics: %s", describe_cpu_numerics())
    return logger


def _pause_collector() -> None:
    """Garbage-collector policy of a stage job (a one-shot process, one per Snakemake job).

    Start-up (torch, transformers and the model) makes millions of long-lived objects, and the cyclic
    collector walks them again and again while they are made (~1 s per job); at exit the interpreter's
    shutdown collections walk them once more (~2 s per job, measured on a generate job: 2.3 s -> 0.4 s).
    Over the default DAG's 80 jobs that is minutes. So the collector is paused from here until
    ``end_startup`` (called once the model is loaded, and when training starts), which freezes what
    start-up made, so later collections skip it, and resumes collection; at exit everything is frozen.
    Reference counting frees objects as usual throughout; atexit handlers (log flushing) still run.
    """
    if not getattr(_pause_collector, "registered", False):
        gc.disable()
        atexit.register(gc.freeze)
        _pause_collector.registered = True


def end_startup() -> None:
    """Resume the collector paused by :func:`start_job`, leaving what exists now out of its reach (a no-op
    outside stage jobs, e.g. in tests or a notebook, where the collector was never paused)."""
    if getattr(_pause_collector, "registered", False) and not gc.isenabled():
        gc.freeze()
        gc.enable()


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
