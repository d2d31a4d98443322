"""TensorFlow's process-wide runtime: imported once and quietly, its thread pools sized.

TensorFlow's C++ core prints notices at import (the oneDNN notice, absl's "All log messages
before absl::InitializeLog()", the cpu_feature_guard line), some of them before its own log
level applies, so ``TF_CPP_MIN_LOG_LEVEL`` alone cannot hide them. Below ``debug`` the import
runs with the process's standard error sent to a temporary file, which is written back if
the import fails. This is the one module that sets an environment variable: TensorFlow's own,
before TensorFlow reads it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from types import ModuleType
from typing import cast

__all__ = ["configure_threads", "import_tensorflow"]

logger = logging.getLogger(__name__)

# captioner's log level -> TF_CPP_MIN_LOG_LEVEL (0 everything, 3 fatal only). Below debug,
# TensorFlow's own C++ lines are off: what goes wrong reaches captioner as a Python error,
# which it reports in its own words (a bad upload is a 400, not a line in the server log).
_TF_CPP_LEVELS = {"debug": "0", "info": "3", "warning": "3", "error": "3"}


def import_tensorflow(log_level: str = "info") -> ModuleType:
    """Import TensorFlow, without its start-up notices unless ``log_level`` is ``debug``.

    The notices go only when the import happens on the main thread (the commands import
    TensorFlow there first): standard error is per process, and another thread's messages
    must not vanish with them. An explicit ``TF_CPP_MIN_LOG_LEVEL`` is kept.

    Args:
        log_level: ``debug``, ``info``, ``warning`` or ``error``.

    Returns:
        The ``tensorflow`` module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]  # set by a finished import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_CPP_LEVELS[log_level])
    if log_level == "debug" or threading.current_thread() is not threading.main_thread():
        import tensorflow

        return cast(ModuleType, tensorflow)
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            _restore(saved)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        _restore(saved)
    return cast(ModuleType, tensorflow)


def _restore(saved: int) -> None:
    os.dup2(saved, 2)
    os.close(saved)


def configure_threads(intra_op: int | None, inter_op: int | None) -> None:
    """Size TensorFlow's thread pools; too late once TF ran an op, which is then logged.

    Set them to the container's CPU limit so TensorFlow does not oversubscribe a throttled
    pod; they apply to the whole process.
    """
    tf = import_tensorflow()
    try:
        if intra_op is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as exc:
        logger.warning("TensorFlow thread settings not applied: %s", exc)
