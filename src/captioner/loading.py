"""Settings -> a loaded engine: the one way every command, the server and a Ray actor do it.

Kept apart from :mod:`captioner.engine` so that the engine (a model in memory) depends
on neither the settings nor the downloader: it can be built from files alone
(:meth:`Captioner.load`), and this module decides where those files come from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captioner.tf_runtime import import_tensorflow

if TYPE_CHECKING:
    from captioner.config import Settings
    from captioner.engine import Captioner
    from captioner.transfer import ProgressMode

__all__ = ["load_engine"]


def load_engine(
    settings: Settings, *, download: bool = True, progress: ProgressMode = "auto"
) -> Captioner:
    """Load the model ``settings`` names.

    TensorFlow is imported quietly (unless ``settings.log_level`` is ``debug``) and its
    thread pools sized first; the pretrained model is downloaded if it is missing,
    unless ``settings.offline`` is set or ``download`` is False. The precision is
    ``settings.precision``, calibrated (bf16, auto) at ``settings.max_batch_size``, or by
    the calibration remembered in ``settings.calibration_file`` for this machine.

    Args:
        settings: ``model``, ``model_dir``, ``checkpoint``, ``vocab``, ``offline``, the
            download settings, ``max_image_pixels``, ``max_decoding_pixels``, thread,
            log and precision settings.
        download: fetch a missing pretrained model.
        progress: how a download reports progress.

    Raises:
        AssetError: no model, and none could be downloaded; the message lists the ways out.
        CheckpointError, VocabularyError: naming the file and the problem.
    """
    from captioner.download import ensure_model
    from captioner.engine import Captioner
    from captioner.precision import CalibrationMemory

    import_tensorflow(settings.log_level)
    files = ensure_model(settings, download=download, progress=progress)
    name = "demo" if settings.model == "demo" and settings.checkpoint is None else None
    return Captioner.load(
        files.checkpoint,
        files.vocab,
        name=name,
        max_image_pixels=settings.max_image_pixels,
        max_decoding_pixels=settings.decoding_pixels,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        precision=settings.precision,
        calibration_batch_size=settings.max_batch_size,
        calibration_memory=CalibrationMemory(settings.calibration_file),
    )
