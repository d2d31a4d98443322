"""Where the model files live: the pinned pretrained assets and the model directory layout.

A model directory holds what the engine loads::

    <model_dir>/checkpoint/checkpoint                      (TF state file)
    <model_dir>/checkpoint/model2.ckpt-2000000.index
    <model_dir>/checkpoint/model2.ckpt-2000000.data-00000-of-00001
    <model_dir>/checkpoint/model2.ckpt-2000000.meta        (TF1 graph, never read)
    <model_dir>/word_counts.txt

The bundled demo model (``--model demo``) uses the same layout inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CHECKPOINT_PREFIX",
    "DEMO_MODEL_DIR",
    "PINNED_ASSET_SHA512",
    "PINNED_VOCAB_SHA256",
    "TARBALL_URLS",
    "VOCAB_FILENAME",
    "VOCAB_URL",
    "ModelFiles",
    "model_files_in",
]

# Newest first: the MAX object-storage bucket, then the older CDN mirror (reported broken).
TARBALL_URLS: tuple[str, ...] = (
    "https://codait-cos-max.s3.us.cloud-object-storage.appdomain.cloud/"
    "max-image-caption-generator/1.0.0/assets.tar.gz",
    "https://max-cdn.cdn.appdomain.cloud/max-image-caption-generator/1.0.0/assets.tar.gz",
)
VOCAB_URL = (
    "https://raw.githubusercontent.com/IBM/MAX-Image-Caption-Generator/"
    "master/assets/word_counts.txt"
)
VOCAB_FILENAME = "word_counts.txt"
CHECKPOINT_DIRNAME = "checkpoint"
CHECKPOINT_PREFIX = "model2.ckpt-2000000"

# Relative paths inside the tarball -> sha512 of the files IBM's MAX project published.
PINNED_ASSET_SHA512: dict[str, str] = {
    "checkpoint/model2.ckpt-2000000.data-00000-of-00001": (
        "eda91f4245224b43dd6c36f16dd49c30bb65d0aea51ca84a13a710bd1b18454e"
        "590cd2ff7822afe9e8501a7fa1c0ff9ec98b3dca55ed8415436d95e0f1a48c52"
    ),
    "checkpoint/model2.ckpt-2000000.index": (
        "39293d83b5d1988537e44810027bb32f7d5f09148da086f4dde1ce1f18f8a53c"
        "c8a67cb415e3ae151d618f15975af796dec2cfbf769bb36168ced81494f90dee"
    ),
    "checkpoint/model2.ckpt-2000000.meta": (
        "acc365f7f48a67a0eee1815dd64bbdad960a7d371cee10e99b295510cae95932"
        "567e6af4faafcfb01092ff63c205d9ccf5702fbbc2d2c9c7f59445f5f098e60d"
    ),
    "checkpoint/checkpoint": (
        "dd6bcd865046b826bfb9559253c8114aa5db0b07ec6c329d25df712a7a2aaab0"
        "19d5e82f3b7807dd162ad034ce8e6a0bdd3c54ab38868172cdd1a881faa030d1"
    ),
}
PINNED_VOCAB_SHA256 = "18e80c920db50056e39fb7c310421836ee96786bb0da0ebc05d7b6117c45363a"

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo"


@dataclass(frozen=True)
class ModelFiles:
    """The two things the engine loads: a checkpoint (prefix or directory) and a vocabulary."""

    checkpoint: Path
    vocab: Path


def model_files_in(model_dir: Path) -> ModelFiles:
    """Return where a model directory keeps its checkpoint directory and vocabulary.

    The checkpoint is given as the directory, so the engine reads its ``checkpoint`` state
    file and works for any prefix (the pretrained ``model2.ckpt-2000000`` or a trained one).
    """
    return ModelFiles(checkpoint=model_dir / CHECKPOINT_DIRNAME, vocab=model_dir / VOCAB_FILENAME)
