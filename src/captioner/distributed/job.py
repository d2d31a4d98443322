"""``run_job``: caption a directory or object-store prefix into a directory of record files
on a Ray cluster, resumably. What ``captioner caption SOURCE --ray`` runs.

Resume is captioner's own, not Ray Data's checkpointing: before the job, the driver reads
the ``path`` column of the files already in DEST and leaves those images out of the read.
It needs nothing but DEST itself (no checkpoint store beside it, no extra actors), and it
holds whatever stopped the last run: a whole file in DEST is a set of images done; a file
torn by a dying driver is deleted and its images done again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from captioner.collection import Summary
from captioner.distributed.dataset import caption_dataset
from captioner.distributed.sinks import write_records
from captioner.distributed.storage import (
    Location,
    OutputFormat,
    list_files,
    read_written,
    resolve,
)
from captioner.outputs import ExistingOutputError
from captioner.pipeline import COLLECTION_BATCH_SIZE

if TYPE_CHECKING:
    from ray.data import Dataset

    from captioner.config import Settings

__all__ = ["JobOptions", "run_job"]


@dataclass(frozen=True)
class JobOptions:
    """How a job runs; the defaults suit a laptop.

    Attributes:
        address: the Ray cluster to join (``"auto"``, ``"ray://head:10001"``); ``None``
            starts a local Ray instance for the job. A driver already connected to Ray
            (``ray.init`` called) uses that connection whatever this says.
        actors: actors holding a model; default: the cluster's CPUs less one for reads.
        cpus_per_actor: CPUs each actor reserves (and TensorFlow's thread pools).
        batch_size: images per engine call.
        output_format: ``parquet`` or ``jsonl`` files in DEST.
        s3_endpoint: an S3-compatible store's URL for ``s3://`` SOURCE and DEST.
        resume: finish a DEST that holds records already, skipping their images.
        beam_size, max_length: the search parameters.
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: int = 1
    batch_size: int = COLLECTION_BATCH_SIZE
    output_format: OutputFormat = "parquet"
    s3_endpoint: str | None = None
    resume: bool = False
    beam_size: int = 3
    max_length: int = 20


def run_job(
    source: str, dest: str, settings: Settings | None = None, options: JobOptions | None = None
) -> Summary:
    """Caption every file under ``source`` into record files under ``dest``.

    Args:
        source: a local directory or a prefix (``s3://bucket/photos``); every file under
            it, hidden ones aside, is an image to caption (a non-image is an error row).
        dest: a directory or prefix for Parquet or JSON Lines files (on a cluster, a
            path every node reaches: a shared filesystem or object storage).
        settings: the model and its precision, as for :func:`caption_dataset`.
        options: see :class:`JobOptions`.

    Returns:
        The in-process runs' summary: this run's counts; ``skipped`` (and of them
        ``skipped_failed``) the images DEST held already; ``seconds`` the whole job.

    Raises:
        ExistingOutputError: DEST holds records and ``resume`` is not set.
    """
    options = options or JobOptions()
    start = time.monotonic()
    source_at = resolve(source, s3_endpoint=options.s3_endpoint)
    dest_at = resolve(dest, s3_endpoint=options.s3_endpoint)
    before = read_written(dest_at, options.output_format)
    done = set(before.column("path").to_pylist())
    if done and not options.resume:
        raise ExistingOutputError(
            f"{dest} holds the records of {len(done)} images already: add --resume to finish "
            "that run, or give another output"
        )
    paths = list_files(source_at)
    todo = [p for p in paths if p not in done]
    if todo:
        with _ray_connection(options.address):
            write_records(
                _captions(todo, source_at, settings, options), dest_at, options.output_format
            )
    written = read_written(dest_at, options.output_format)
    new = written.filter(pc.is_in(written["path"], value_set=pa.array(todo, pa.string())))
    skipped = before.filter(pc.is_in(before["path"], value_set=pa.array(paths, pa.string())))
    failed = _errors(new)
    return Summary(
        captioned=new.num_rows - failed,
        failed=failed,
        skipped=skipped.num_rows,
        skipped_failed=_errors(skipped),
        seconds=time.monotonic() - start,
    )


def _errors(records: pa.Table) -> int:
    return int(pc.sum(pc.equal(records["status"], "error")).as_py() or 0)


def _captions(
    paths: list[str], source: Location, settings: Settings | None, options: JobOptions
) -> Dataset:
    import ray

    images = ray.data.read_binary_files(paths, filesystem=source.filesystem, include_paths=True)
    return caption_dataset(
        images,
        settings,
        actors=options.actors,
        cpus_per_actor=options.cpus_per_actor,
        batch_size=options.batch_size,
        beam_size=options.beam_size,
        max_length=options.max_length,
    )


@contextlib.contextmanager
def _ray_connection(address: str | None) -> Iterator[None]:
    """Join ``address`` (or start a local instance) for the job, unless already connected."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()
