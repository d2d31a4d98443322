"""The Ray job for real: a two-node cluster on this machine, the demo model in every actor,
a few hundred generated scenes with bad files among them.

What must hold whatever happens: every listed image appears exactly once in DEST, with the
captions the in-process engine gives, and a bad file as an error row with its reason.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from records import local_records, read_records
from s3_store import running_store

from captioner.collection import Summary
from captioner.distributed import JobOptions, caption_dataset, run_job
from captioner.engine import Captioner
from captioner.loading import load_engine
from captioner.outputs import ExistingOutputError
from captioner.pipeline import caption_batch
from captioner.training.shapes import generate_scene, scene_rng
from conftest import BAD_FILES, DEMO, SCENES, write_scenes

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ACTORS = JobOptions(actors=2, batch_size=8)


@pytest.fixture(scope="module")
def engine() -> Captioner:
    """The demo model in this process: the captions the cluster must reproduce."""
    return load_engine(DEMO)


@pytest.fixture(scope="module")
def parquet_job(
    ray_cluster: str, scenes: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Summary]:
    """The scenes captioned once into Parquet files."""
    dest = tmp_path_factory.mktemp("parquet") / "out"
    return dest, run_job(str(scenes[0]), str(dest), DEMO, ACTORS)


def assert_every_image_once(
    records: list[dict[str, Any]], truth: dict[str, str], engine: Captioner, sample: int = 12
) -> None:
    """Each path of ``truth`` exactly once; the bad files as error rows; a sample of the
    images with exactly the in-process engine's captions."""
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)), "an image was written twice"
    assert set(paths) == set(truth)
    by_path = {r["path"]: r for r in records}
    for name in BAD_FILES:
        (bad,) = [r for p, r in by_path.items() if p.endswith("/" + name)]
        assert bad["status"] == "error" and bad["captions"] == [] and bad["error"]
    images = sorted(p for p, caption in truth.items() if caption)
    assert all(by_path[p]["status"] == "ok" and by_path[p]["error"] is None for p in images)
    chosen = random.Random(19).sample(images, sample)
    expected = caption_batch(engine, [(p, Path(p).read_bytes()) for p in chosen])
    for path, result in zip(chosen, expected, strict=True):
        got = by_path[path]["captions"]
        assert [c["caption"] for c in got] == [c.text for c in result.captions]
        assert [c["logprob"] for c in got] == pytest.approx(
            [c.logprob for c in result.captions], abs=1e-5
        )
    # The demo model learnt this grammar: nearly every scene gets its true caption.
    right = sum(by_path[p]["captions"][0]["caption"] == truth[p] for p in images)
    assert right >= 0.9 * len(images)


def test_every_image_once_with_the_engines_captions(
    parquet_job: tuple[Path, Summary], scenes: tuple[Path, dict[str, str]], engine: Captioner
) -> None:
    dest, summary = parquet_job
    truth = scenes[1]
    assert_every_image_once(local_records(str(dest), "parquet"), truth, engine)
    assert (summary.captioned, summary.failed, summary.skipped) == (SCENES, len(BAD_FILES), 0)


def test_resume_redoes_only_what_is_missing_or_torn(
    parquet_job: tuple[Path, Summary],
    scenes: tuple[Path, dict[str, str]],
    engine: Captioner,
    tmp_path: Path,
) -> None:
    dest = tmp_path / "out"
    shutil.copytree(parquet_job[0], dest)
    files = sorted(dest.glob("*.parquet"))
    assert len(files) >= 3, "the job should write several files"
    lost = pq.read_table(files[0]).num_rows + pq.read_table(files[1]).num_rows
    files[0].unlink()  # never written: the driver died first
    files[1].write_bytes(files[1].read_bytes()[: files[1].stat().st_size // 2])  # torn

    with pytest.raises(ExistingOutputError, match="--resume"):
        run_job(str(scenes[0]), str(dest), DEMO, ACTORS)
    summary = run_job(str(scenes[0]), str(dest), DEMO, JobOptions(actors=2, resume=True))

    assert summary.captioned + summary.failed == lost
    assert summary.skipped == len(scenes[1]) - lost
    assert_every_image_once(local_records(str(dest), "parquet"), scenes[1], engine)
    again = run_job(str(scenes[0]), str(dest), DEMO, JobOptions(resume=True))
    assert (again.captioned, again.failed, again.skipped) == (0, 0, len(scenes[1]))


def caption_actor_pids() -> set[int]:
    """The processes of the captioning actors (Ray titles them after the class)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"CaptionActor" in command:
                pids.add(int(entry.name))
    return pids


def test_an_actor_killed_mid_job_loses_and_repeats_nothing(
    ray_cluster: str, engine: Captioner, tmp_path: Path
) -> None:
    truth = write_scenes(tmp_path / "scenes", SCENES)
    dest = tmp_path / "out"
    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            options = JobOptions(actors=2, output_format="jsonl")
            outcome["summary"] = run_job(str(tmp_path / "scenes"), str(dest), DEMO, options)
        except BaseException as exc:  # the assertion below reports it
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 180
    while not list(dest.glob("*.jsonl")):  # the first batches are written: mid-job
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.05)
    (victim, *_) = sorted(caption_actor_pids())
    written_before = len(local_records(str(dest), "jsonl"))
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=240)

    assert not thread.is_alive() and "error" not in outcome, outcome
    assert written_before < len(truth), "the kill came after the job's last write"
    assert victim not in caption_actor_pids()
    assert_every_image_once(local_records(str(dest), "jsonl"), truth, engine)
    summary = outcome["summary"]
    assert (summary.captioned, summary.failed) == (SCENES, len(BAD_FILES))


def test_object_storage_source_and_dest(
    ray_cluster: str, engine: Captioner, tmp_path: Path
) -> None:
    truth = write_scenes(tmp_path / "scenes", 40)
    with running_store(tmp_path / "store", "photos") as store:
        s3 = store.filesystem
        keys = {}
        for path in truth:
            key = "photos/in/" + str(Path(path).relative_to(tmp_path / "scenes"))
            with s3.open_output_stream(key) as stream:
                stream.write(Path(path).read_bytes())
            keys[key] = path
        options = JobOptions(actors=2, output_format="jsonl", s3_endpoint=store.endpoint)

        summary = run_job("s3://photos/in", "s3://photos/out", DEMO, options)

        records = read_records(s3, "photos/out", "jsonl")
        assert sorted(r["path"] for r in records) == sorted(keys)
        local = [{**r, "path": keys[r["path"]]} for r in records]
        assert_every_image_once(local, truth, engine, sample=5)
        assert (summary.captioned, summary.failed) == (40, len(BAD_FILES))
        again = run_job("s3://photos/in", "s3://photos/out", DEMO, replace(options, resume=True))
        assert again.skipped == len(truth) and again.captioned == 0


def test_caption_dataset_in_a_users_own_pipeline(ray_cluster: str, engine: Captioner) -> None:
    import ray

    rows = [{"path": "broken", "bytes": b"\x89PNG and then nothing"}]
    for index in range(6):
        image, _ = generate_scene(scene_rng(5, index))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rows.append({"path": f"scene-{index}", "bytes": buffer.getvalue()})

    records = caption_dataset(ray.data.from_items(rows), DEMO, actors=1, batch_size=4).take_all()

    by_path = {r["path"]: r for r in records}
    assert len(records) == len(rows) and set(by_path) == {r["path"] for r in rows}
    assert by_path["broken"]["status"] == "error" and by_path["broken"]["error"]
    for result in caption_batch(engine, [(r["path"], r["bytes"]) for r in rows[1:]]):
        got = by_path[result.source]
        assert got["status"] == "ok"
        assert [c["caption"] for c in got["captions"]] == [c.text for c in result.captions]


def test_the_cli_joins_the_cluster_and_prints_the_same_summary(
    ray_cluster: str, engine: Captioner, tmp_path: Path
) -> None:
    truth = write_scenes(tmp_path / "scenes", 30)
    dest = tmp_path / "out"
    command = [
        sys.executable, "-m", "captioner", "caption", str(tmp_path / "scenes"),
        "--ray", ray_cluster, "--actors", "2", "--model", "demo",
        "--output", str(dest), "--format", "jsonl",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert run.returncode == 1, run.stderr  # the bad files are error rows
    assert f"captioned 30, failed {len(BAD_FILES)}, skipped 0" in run.stderr
    assert_every_image_once(local_records(str(dest), "jsonl"), truth, engine, sample=5)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "--resume" in again.stderr
