"""``caption_dataset``: the one step people add to their own Ray pipelines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from captioner.distributed.actor import CaptionActor, actor_settings
from captioner.pipeline import COLLECTION_BATCH_SIZE

if TYPE_CHECKING:
    from ray.data import Dataset

    from captioner.config import Settings

__all__ = ["caption_dataset", "default_actors"]


def caption_dataset(
    dataset: Dataset,
    settings: Settings | None = None,
    *,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    batch_size: int = COLLECTION_BATCH_SIZE,
    beam_size: int = 3,
    max_length: int = 20,
) -> Dataset:
    """Caption every row of ``dataset``: one record per image, as a lazy ``Dataset``.

    Args:
        dataset: rows with ``bytes`` (the file's contents) and ``path`` (its name), as
            ``ray.data.read_binary_files(..., include_paths=True)`` gives them.
        settings: which model, its precision and files; default ``Settings()`` read from the
            driver's environment. Every actor loads the model from these.
        actors: size of the actor pool; default :func:`default_actors`.
        cpus_per_actor: CPUs Ray reserves for each actor, and TensorFlow's thread pools.
        batch_size: images per engine call.
        beam_size, max_length: the search parameters.

    Returns:
        ``path``, ``status`` (``ok`` or ``error``), ``captions`` (``caption``,
        ``probability``, ``logprob``; best first), ``error``: each image exactly once, a
        corrupt one as an error row. An actor whose process dies is restarted and its
        batches run again (Ray Data's default for actor pools: ``max_restarts`` and
        ``max_task_retries`` unbounded; passing them is deprecated in Ray 2.60); a model
        that fails to load fails the job at once (Ray does not restart a constructor's
        own error).
    """
    import ray

    from captioner.config import Settings

    settings = actor_settings(settings or Settings(), cpus_per_actor)
    return dataset.map_batches(
        CaptionActor,
        fn_constructor_kwargs={
            "settings": settings,
            "beam_size": beam_size,
            "max_length": max_length,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors or default_actors(cpus_per_actor)),
        num_cpus=cpus_per_actor,
    )


def default_actors(cpus_per_actor: int) -> int:
    """As many actors as the cluster's CPUs hold, less one CPU for Ray's read tasks.

    An actor pool that takes every CPU leaves none for the reads that feed it, and the job
    waits forever (Ray's known pitfall).
    """
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
    return max(1, (cpus - 1) // cpus_per_actor)
