"""The KubeRay ``RayJob`` in ``k8s/ray/``, checked as data: no cluster and no operator here.

Its entrypoint must call the job with options that exist and that leave each worker pod a
CPU for Ray's reads (an actor pool that takes every CPU hangs the job); it must run the
project's image at the deployment's tag, as the image's non-root user, with the Ray the
``ray`` extra pins.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

import pytest
import yaml
from deployfiles import K8S_DIR, REPO, k8s_objects
from packaging.version import Version

from captioner.config import load_settings
from captioner.distributed import JobOptions

RAYJOB = K8S_DIR / "ray" / "rayjob.yaml"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    (document,) = yaml.safe_load_all(RAYJOB.read_text())
    assert (document["apiVersion"], document["kind"]) == ("ray.io/v1", "RayJob")
    return document


def pods(job: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = job["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def job_options(job: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``JobOptions(...)`` in the entrypoint's Python."""
    command = job["spec"]["entrypoint"]
    assert command.startswith('python -c "') and command.endswith('"')
    tree = ast.parse(command.removeprefix('python -c "').removesuffix('"'))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = {getattr(c.func, "id", None) for c in calls}
    assert {"run_job", "JobOptions"} <= names
    (options,) = [c for c in calls if getattr(c.func, "id", None) == "JobOptions"]
    return {k.arg: ast.literal_eval(k.value) for k in options.keywords}


def test_entrypoint_options_exist_and_leave_a_cpu_per_pod_for_reads(job: dict[str, Any]) -> None:
    options = JobOptions(**job_options(job))  # an unknown option raises here
    assert options.address == "auto"
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    room = sum(int(g["replicas"]) * (int(g["rayStartParams"]["num-cpus"]) - 1) for g in workers)
    assert options.actors is not None and options.actors * options.cpus_per_actor <= room
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head runs only the driver"


def test_ray_cpus_are_the_containers_cpus(job: dict[str, Any]) -> None:
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        assert group["rayStartParams"]["num-cpus"] == str(limits["cpu"])
        assert container["resources"]["requests"] == limits


def test_the_projects_image_at_the_deployments_tag(job: dict[str, Any]) -> None:
    (deployed,) = {
        c["image"] for c in k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    }
    for pod in pods(job):
        assert {c["image"] for c in pod["containers"]} == {deployed}


def test_ray_version_is_the_one_the_tests_ran(job: dict[str, Any]) -> None:
    """KubeRay's ``rayVersion`` names the image's Ray: the one the Ray tests ran against."""
    import ray

    declared = Version(job["spec"]["rayClusterSpec"]["rayVersion"])
    installed = Version(ray.__version__)
    assert (declared.major, declared.minor) == (installed.major, installed.minor)


def test_every_pod_runs_as_the_images_non_root_user(job: dict[str, Any]) -> None:
    for pod in pods(job):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_the_drivers_settings_are_valid_and_name_the_workers_volume(job: dict[str, Any]) -> None:
    head, *workers = pods(job)
    (driver,) = head["containers"]
    variables = {e["name"]: e["value"] for e in driver.get("env", [])}
    settings = load_settings(
        **{k.removeprefix("CAPTIONER_").lower(): v for k, v in variables.items()}
    )
    for pod in workers:
        (container,) = pod["containers"]
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        assert any(settings.model_dir.is_relative_to(m) for m in mounts)


def test_job_options_fields_are_what_the_docs_name() -> None:
    page = (REPO / "docs" / "scale-out.md").read_text()
    for field in dataclasses.fields(JobOptions):
        assert f"`{field.name}`" in page, f"docs/scale-out.md does not explain {field.name}"
