"""Read and write im2txt checkpoints by tensor name, checking every shape on the way in.

A checkpoint is given as a prefix (``.../model2.ckpt-2000000``) or as a directory holding a
TensorFlow ``checkpoint`` state file. Every width (Inception channels, embedding size, LSTM
units, vocabulary rows) is read from the tensor shapes, so smaller checkpoints of the same
layout load too. Any problem becomes one :class:`CheckpointError` that names the file and
the tensor, never a TensorFlow stack trace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioner.encoder import SCOPE, ConvWeights, inception_v3, inception_v3_layout
from captioner.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMS",
    "LSTM_NAMINGS",
    "Im2txtWeights",
    "im2txt_tensor_shapes",
    "load_checkpoint",
    "resolve_checkpoint_prefix",
    "save_checkpoint",
]

# (kernel, bias) names by the TensorFlow generation that wrote the file (docs/faithfulness.md,
# "The checkpoint").
LSTM_NAMINGS: tuple[tuple[str, str], ...] = (
    ("lstm/basic_lstm_cell/kernel", "lstm/basic_lstm_cell/bias"),  # TF >= 1.2
    ("lstm/basic_lstm_cell/weights", "lstm/basic_lstm_cell/biases"),  # TF 1.0-1.1
    ("lstm/BasicLSTMCell/Linear/Matrix", "lstm/BasicLSTMCell/Linear/Bias"),  # TF 0.x
)
_BN_PARTS = ("beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class Im2txtWeights:
    """Every tensor inference needs, float32 numpy arrays, shapes already checked.

    Attributes:
        convs: conv name (without the ``InceptionV3/`` scope) -> its weights, graph order.
        image_embedding: ``[F, E]``, image feature -> LSTM input; no bias.
        seq_embedding: ``[V, E]``, word id -> LSTM input.
        lstm_kernel: ``[E + H, 4H]``, gates in the order i, j, f, o.
        lstm_bias: ``[4H]``, without the forget bias 1.0 that BasicLSTMCell adds at run time.
        logits_weights: ``[H, V]``; logits_biases: ``[V]``.
        global_step: the training step the checkpoint was saved at.
    """

    convs: dict[str, ConvWeights]
    image_embedding: np.ndarray
    seq_embedding: np.ndarray
    lstm_kernel: np.ndarray
    lstm_bias: np.ndarray
    logits_weights: np.ndarray
    logits_biases: np.ndarray
    global_step: int

    @property
    def feature_size(self) -> int:
        return int(self.image_embedding.shape[0])

    @property
    def embedding_size(self) -> int:
        return int(self.image_embedding.shape[1])

    @property
    def lstm_units(self) -> int:
        return int(self.logits_weights.shape[0])

    @property
    def vocab_rows(self) -> int:
        return int(self.logits_biases.shape[0])


# The files a TF checkpoint prefix owns: "<prefix>.index", "<prefix>.data-00000-of-00001", ...
_PREFIX_FILE = re.compile(r"^(?P<prefix>.+)\.(?:index|meta|data-\d+-of-\d+)$")
STATE_FILENAME = "checkpoint"
CHECKPOINT_FORMS = (
    "a directory with a 'checkpoint' state file, a prefix such as model.ckpt-4000, "
    "or one of the prefix's .index, .data-*-of-* or .meta files"
)


def resolve_checkpoint_prefix(path: Path | str) -> Path:
    """Turn any way of naming a checkpoint into its checked prefix.

    Accepted, all naming the same checkpoint: the directory holding a ``checkpoint`` state
    file (or that state file itself), the prefix (``.../model.ckpt-4000``), and any one of the
    prefix's own files (``.index``, ``.data-00000-of-00001``, ``.meta``).

    Raises:
        CheckpointError: nothing there, no usable state file, a file that belongs to no
            prefix, or the prefix's index or data file missing.
    """
    path = Path(path)
    if path.is_file() and path.name == STATE_FILENAME:
        path = path.parent
    if path.is_dir():
        prefix = _prefix_from_state_file(path)
    elif path.is_file():
        match = _PREFIX_FILE.match(path.name)
        if match is None:
            raise CheckpointError(f"not a checkpoint file; give {CHECKPOINT_FORMS}", path=path)
        prefix = path.with_name(match["prefix"])
    else:
        prefix = path
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        if not path.exists():
            raise CheckpointError(f"no such checkpoint; give {CHECKPOINT_FORMS}", path=path)
        raise CheckpointError(f"checkpoint index file not found: {index}", path=prefix)
    if not list(prefix.parent.glob(prefix.name + ".data-*-of-*")):
        raise CheckpointError("checkpoint data file (.data-*-of-*) not found", path=prefix)
    return prefix


def _prefix_from_state_file(directory: Path) -> Path:
    """The prefix a checkpoint directory's ``checkpoint`` state file names."""
    state = directory / STATE_FILENAME
    if not state.is_file():
        raise CheckpointError(
            "directory has no 'checkpoint' state file; give the checkpoint prefix instead",
            path=directory,
        )
    try:
        text = state.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read the state file: {exc}", path=state) from exc
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.M)
    if match is None:
        raise CheckpointError("state file names no model_checkpoint_path", path=state)
    # Written paths may be absolute paths of another machine: only the name is trusted.
    return directory / Path(match.group(1)).name


class _Reader:
    """Reads named tensors, turning every TensorFlow failure into a CheckpointError."""

    def __init__(self, prefix: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self.prefix = prefix
        try:
            self._reader = tf.train.load_checkpoint(str(prefix))
            self.shapes: dict[str, list[int]] = self._reader.get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError) as exc:
            message = f"unreadable checkpoint: {_first_line(exc)}"
            raise CheckpointError(message, path=prefix) from exc

    def has(self, name: str) -> bool:
        return name in self.shapes

    def get(self, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
        """Read ``name``, checking its shape against ``shape`` (None = any size)."""
        if name not in self.shapes:
            raise CheckpointError(f"missing tensor {name!r}", path=self.prefix)
        actual = tuple(self.shapes[name])
        if len(actual) != len(shape) or any(
            want is not None and want != got for want, got in zip(shape, actual, strict=False)
        ):
            wanted = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
            raise CheckpointError(
                f"tensor {name!r} has shape {list(actual)}, expected {wanted}", path=self.prefix
            )
        try:
            value = self._reader.get_tensor(name)
        except (self._tf.errors.OpError, IndexError, ValueError) as exc:
            raise CheckpointError(
                f"cannot read tensor {name!r} (truncated or corrupt data file?): "
                f"{_first_line(exc)}",
                path=self.prefix,
            ) from exc
        return np.asarray(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _CheckingOps:
    """Walks the Inception wiring over a checkpoint: reads each conv, checks it chains."""

    def __init__(self, reader: _Reader) -> None:
        self._reader = reader
        self.convs: dict[str, ConvWeights] = {}

    def conv(
        self, x: int, name: str, kernel: tuple[int, int], depth: int, stride: int, padding: str
    ) -> int:
        scoped = f"{SCOPE}/{name}"
        weights = self._reader.get(f"{scoped}/weights", (kernel[0], kernel[1], x, None))
        out = int(weights.shape[3])
        bn = [self._reader.get(f"{scoped}/BatchNorm/{part}", (out,)) for part in _BN_PARTS]
        self.convs[name] = ConvWeights(
            weights.astype(np.float32), *(v.astype(np.float32) for v in bn)
        )
        return out

    def max_pool(self, x: int, size: int, stride: int, padding: str) -> int:
        return x

    avg_pool = max_pool

    def concat(self, xs: Sequence[int]) -> int:
        return sum(xs)

    def global_pool(self, x: int) -> int:
        return x


def load_checkpoint(path: Path | str) -> Im2txtWeights:
    """Load every im2txt inference tensor from a checkpoint, by name, with shape checks.

    Args:
        path: a checkpoint prefix, or a directory holding a ``checkpoint`` state file.

    Returns:
        The weights, with widths taken from the tensor shapes.

    Raises:
        CheckpointError: missing/truncated files, a missing tensor, or a shape that does not
            fit the im2txt layout (the message names the tensor and both shapes).
    """
    prefix = resolve_checkpoint_prefix(path)
    reader = _Reader(prefix)
    checking = _CheckingOps(reader)
    feature_size = inception_v3(3, checking)

    image_embedding = reader.get("image_embedding/weights", (feature_size, None))
    embedding = int(image_embedding.shape[1])
    seq_embedding = reader.get("seq_embedding/map", (None, embedding))
    vocab_rows = int(seq_embedding.shape[0])
    naming = next((n for n in LSTM_NAMINGS if reader.has(n[0])), None)
    if naming is None:
        raise CheckpointError(
            "missing LSTM kernel: none of " + ", ".join(repr(n[0]) for n in LSTM_NAMINGS),
            path=prefix,
        )
    lstm_kernel = reader.get(naming[0], (None, None))
    units4 = int(lstm_kernel.shape[1])
    if units4 % 4 or lstm_kernel.shape[0] != embedding + units4 // 4:
        raise CheckpointError(
            f"tensor {naming[0]!r} has shape {list(lstm_kernel.shape)}, expected "
            f"[{embedding} + H, 4H] for embedding size {embedding}",
            path=prefix,
        )
    units = units4 // 4
    lstm_bias = reader.get(naming[1], (units4,))
    logits_weights = reader.get("logits/weights", (units, vocab_rows))
    logits_biases = reader.get("logits/biases", (vocab_rows,))
    global_step = int(reader.get("global_step", ())) if reader.has("global_step") else 0
    return Im2txtWeights(
        convs=checking.convs,
        image_embedding=image_embedding.astype(np.float32),
        seq_embedding=seq_embedding.astype(np.float32),
        lstm_kernel=lstm_kernel.astype(np.float32),
        lstm_bias=lstm_bias.astype(np.float32),
        logits_weights=logits_weights.astype(np.float32),
        logits_biases=logits_biases.astype(np.float32),
        global_step=global_step,
    )


def im2txt_tensor_shapes(
    *,
    depth_multiplier: float = 1.0,
    vocab_rows: int = 12000,
    embedding_size: int = 512,
    lstm_units: int = 512,
    min_depth: int = 16,
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of an im2txt checkpoint of the given size, graph order.

    At the defaults this is the 383-tensor layout of the pretrained ``model2.ckpt-2000000``;
    ``depth_multiplier`` and ``min_depth`` scale Inception's channels as
    :func:`~captioner.encoder.inception_v3_layout` does.
    """
    convs, feature_size = inception_v3_layout(depth_multiplier, min_depth)
    shapes: dict[str, tuple[int, ...]] = {}
    for conv in convs:
        shapes[f"{SCOPE}/{conv.name}/weights"] = conv.kernel_shape
        for part in _BN_PARTS:
            shapes[f"{SCOPE}/{conv.name}/BatchNorm/{part}"] = (conv.kernel_shape[3],)
    kernel, bias = LSTM_NAMINGS[0]
    shapes.update(
        {
            "image_embedding/weights": (feature_size, embedding_size),
            "seq_embedding/map": (vocab_rows, embedding_size),
            kernel: (embedding_size + lstm_units, 4 * lstm_units),
            bias: (4 * lstm_units,),
            "logits/weights": (lstm_units, vocab_rows),
            "logits/biases": (vocab_rows,),
            "global_step": (),
        }
    )
    return shapes


def save_checkpoint(prefix: Path | str, tensors: Mapping[str, np.ndarray]) -> Path:
    """Write tensors under their exact names as a TF V2 checkpoint plus a ``checkpoint`` file.

    Uses the raw ``SaveV2`` op so names stay exactly as given (``tf.train.Checkpoint`` would
    rewrite them). The state file names the prefix relative to its directory, so the
    directory can be moved or mounted elsewhere.

    Returns:
        The prefix written.
    """
    import tensorflow as tf

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(tensors[name]) for name in names],
    )
    (prefix.parent / STATE_FILENAME).write_text(
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'
    )
    return prefix
