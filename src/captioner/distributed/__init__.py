"""Captioning on a Ray cluster (the ``ray`` extra): Ray Data does the reading, the actors and
the retries; captioner supplies the model inside each actor and the records it writes.

- :func:`caption_dataset`: for people's own Ray pipelines, a ``Dataset`` of image bytes and
  paths in, a ``Dataset`` of caption records out.
- :func:`run_job`: what ``captioner caption SOURCE --ray`` runs: a directory or object-store
  prefix in, a directory of Parquet or JSON Lines files out, resumable.

The package needs the ``ray`` extra (Ray Data, pyarrow); the rest of captioner never
imports it. TensorFlow is imported only inside the actors, which load the model.
"""

from __future__ import annotations

from captioner.distributed.dataset import caption_dataset
from captioner.distributed.job import JobOptions, run_job

__all__ = ["JobOptions", "caption_dataset", "run_job"]
