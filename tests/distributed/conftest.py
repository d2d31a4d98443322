"""A Ray cluster of two nodes on this machine, a folder of generated scenes with some bad
files, and the demo model in process to check the cluster's captions against.

The cluster's nodes each declare two CPUs (logical: Ray schedules by them; the machine has
two cores in all), so two one-CPU actors leave two for Ray's read and write tasks.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_store import ACCESS_KEY, SECRET_KEY

from captioner.config import Settings
from captioner.training.shapes import generate_scene, scene_rng

SCENES = 240
# name -> bytes: files that are not images the model can read; each must be an error row.
BAD_FILES = {
    "corrupt.jpg": b"\xff\xd8\xff\xe0 a JPEG header and then nothing",
    "notes.txt": b"not an image at all\n",
    "empty.png": b"",
}
DEMO = Settings(model="demo")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Two nodes joined into one cluster; the test process is its driver.

    The AWS variables are set first: Ray's workers inherit the environment of the nodes,
    and read their S3 credentials from it as any AWS client does.
    """
    import ray
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud for credentials
        env.setenv("RAY_AUTH_MODE", "disabled")  # no token written into the home directory
        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
        )
        try:
            cluster.add_node(num_cpus=2)
            ray.init(address=cluster.address, log_to_driver=False)
            cluster.wait_for_nodes()
            yield cluster.address
        finally:
            ray.shutdown()
            cluster.shutdown()


def write_scenes(directory: Path, count: int) -> dict[str, str]:
    """``count`` JPEG scenes in nested folders, plus :data:`BAD_FILES` and a hidden file.

    Returns:
        Each image's path (as the job lists it) -> its true caption ("" for a bad file).
    """
    truth = {}
    for index in range(count):
        image, caption = generate_scene(scene_rng(19, index))
        path = directory / f"part-{index % 3}" / f"{index:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
        truth[str(path)] = caption
    for name, data in BAD_FILES.items():
        (directory / name).write_bytes(data)
        truth[str(directory / name)] = ""
    (directory / ".DS_Store").write_bytes(b"hidden: never listed")
    return truth


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder of :data:`SCENES` scenes and the bad files, with the truth per path."""
    directory = tmp_path_factory.mktemp("scenes")
    return directory, write_scenes(directory, SCENES)
