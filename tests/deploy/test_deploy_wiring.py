"""What the schemas cannot see: the shipping files agree with the server and with each other.

Routes come from the FastAPI app, settings from ``Settings.model_fields``, commands from
the click group, so a renamed route, setting or option fails here rather than in a cluster.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from deployfiles import (
    DOCKERFILE,
    ENTRYPOINT_SCRIPT,
    K8S_DIR,
    REPO,
    Dockerfile,
    DockerIgnore,
    Image,
    compose_model,
    k8s_objects,
    kustomization,
    plain_commands,
)
from pydantic import AliasChoices

from captioner.api.app import create_app
from captioner.cli import cli
from captioner.config import Settings

READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
# Variables the files may set that are not captioner settings: the interpreter's, pip's
# (build stage only) and TensorFlow's own.
FOREIGN_VARIABLES = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "TF_NUM_INTRAOP_THREADS",
}
# A first start downloads a 277 MB tarball and verifies it: 10 minutes is 0.5 MB/s.
FIRST_DOWNLOAD_BUDGET_S = 600


@pytest.fixture(scope="module")
def answer() -> Callable[[str, str], int]:
    """The status the server's app answers ``method path`` with, before any model loads.

    Asking the app itself, rather than listing its routes, sees routers and mounts alike;
    404 and 405 mean no such route.
    """
    app = create_app(Settings())
    transport = httpx.ASGITransport(app=app)  # no lifespan: the model never loads

    async def status(method: str, path: str) -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.request(method, path)).status_code

    return lambda method, path: asyncio.run(status(method, path))


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    """The final image of each MODEL_SOURCE."""
    dockerfile = Dockerfile.read()
    return {source: dockerfile.image({"MODEL_SOURCE": source}) for source in ("volume", "baked")}


@pytest.fixture(scope="module")
def compose_service() -> dict[str, Any]:
    """The compose file's one service, as Compose resolves it with no variables set."""
    services = compose_model()["services"]
    assert list(services) == ["captioner"]
    return services["captioner"]


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object, by kind."""
    return k8s_objects()


def pod_spec(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return k8s["Deployment"]["spec"]["template"]["spec"]


def server_container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(k8s)["containers"]
    return container


def init_container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = pod_spec(k8s)["initContainers"]
    return container


def seconds(duration: str) -> float:
    """``600s``, ``10m0s``, ``1m30s`` -> seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts and duration, f"not a duration: {duration}"
    hours, minutes, secs = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def parse_cli(argv: list[str]) -> click.Context:
    """Parse ``captioner <argv>`` as the installed command would, without running it."""
    group_ctx = cli.make_context("captioner", list(argv), resilient_parsing=False)
    name, command, rest = cli.resolve_command(group_ctx, list(argv))
    assert command is not None, f"no command {name}"
    return command.make_context(str(name), rest, parent=group_ctx)


# --- one server, started the same way everywhere -----------------------------------------


def test_image_cmd_is_captioner_serve_through_the_entrypoint(images: dict[str, Image]) -> None:
    dockerfile = Dockerfile.read()
    for image in images.values():
        assert image.cmd == ["serve"]
        assert parse_cli(image.cmd).command.name == "serve"
        (sources,) = [
            src for src, dest in dockerfile.context_copies() if dest == image.entrypoint[0]
        ]
        assert [REPO / s for s in sources] == [ENTRYPOINT_SCRIPT]
    script = ENTRYPOINT_SCRIPT.read_text()
    # The last command hands the arguments to `captioner`, replacing the shell.
    assert script.rstrip().splitlines()[-1] == 'exec captioner "$@"'
    assert os.access(ENTRYPOINT_SCRIPT, os.X_OK)


def test_compose_and_kubernetes_start_the_image_cmd(
    images: dict[str, Image], compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    cmd = images["volume"].cmd
    assert compose_service["command"] == cmd
    assert compose_service.get("entrypoint") is None  # the image's entry point
    container = server_container(k8s)
    assert container["args"] == cmd
    assert "command" not in container


def test_init_container_runs_a_valid_download(k8s: dict[str, dict[str, Any]]) -> None:
    container = init_container(k8s)
    assert "command" not in container
    ctx = parse_cli(container["args"])
    assert ctx.command.name == "download"
    # No --dest: it installs into CAPTIONER_MODEL_DIR, where the server looks.
    assert ctx.params["dest"] is None


def test_images_compose_and_kubernetes_use_one_version_tag(
    compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    expected = f"captioner:{version('captioner')}"
    assert compose_service["image"] == expected
    assert server_container(k8s)["image"] == expected
    assert init_container(k8s)["image"] == expected


# --- ports and routes --------------------------------------------------------------------


def test_every_port_is_the_servers_default_port(
    images: dict[str, Image], compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    port = Settings.model_fields["port"].default
    for image in images.values():
        assert image.expose == [str(port)]
        assert image.env.get("CAPTIONER_PORT", str(port)) == str(port)
    assert [p["target"] for p in compose_service["ports"]] == [port]
    (container_port,) = server_container(k8s)["ports"]
    assert container_port == {"name": "http", "containerPort": port}
    (service_port,) = k8s["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == container_port["name"]
    annotations = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_probe_paths_are_routes_of_the_server(
    answer: Callable[[str, str], int], k8s: dict[str, dict[str, Any]]
) -> None:
    # Not loaded yet: alive, not ready. A probe path that is not a route would say 404.
    assert answer("GET", LIVE_PATH) == 200
    assert answer("GET", READY_PATH) == 503
    assert answer("GET", "/v2/health/no-such-probe") == 404
    container = server_container(k8s)
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["startupProbe"]["path"] == READY_PATH
    assert probes["readinessProbe"]["path"] == READY_PATH
    assert probes["livenessProbe"]["path"] == LIVE_PATH
    assert all(p["port"] == "http" for p in probes.values())
    metrics_path = k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/path"
    ]
    assert answer("GET", metrics_path) == 200


def test_healthchecks_ask_the_readiness_route(
    images: dict[str, Image], compose_service: dict[str, Any]
) -> None:
    healthcheck = images["volume"].healthcheck
    assert healthcheck[:2] == ["python", "-c"]
    url = re.search(r"'http://127\.0\.0\.1:%s(/[^']*)'", healthcheck[2])
    assert url and url.group(1) == READY_PATH
    # The port follows CAPTIONER_PORT, defaulting to the server's.
    assert f"'CAPTIONER_PORT', '{Settings.model_fields['port'].default}'" in healthcheck[2]
    assert compose_service["healthcheck"]["test"] == ["CMD", *healthcheck]


def test_startup_budgets_cover_a_first_download(
    images: dict[str, Image], compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    assert seconds(images["volume"].healthcheck_options["start-period"]) >= FIRST_DOWNLOAD_BUDGET_S
    assert seconds(compose_service["healthcheck"]["start_period"]) >= FIRST_DOWNLOAD_BUDGET_S
    startup = server_container(k8s)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= FIRST_DOWNLOAD_BUDGET_S


# --- settings ----------------------------------------------------------------------------


def setting_variables() -> set[str]:
    """Every environment variable Settings reads: CAPTIONER_<FIELD> and the aliases."""
    names = set()
    for name, info in Settings.model_fields.items():
        names.add(f"CAPTIONER_{name.upper()}")
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices if str(choice).isupper()}
        elif isinstance(alias, str):
            names.add(alias)
    return names


def environments(
    images: dict[str, Image], compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> dict[str, dict[str, str]]:
    """Every environment the files set for the server, by where it is set."""
    found = {f"Dockerfile ({source})": image.env for source, image in images.items()}
    found["Dockerfile (build stage)"] = Dockerfile.read().image({"MODEL_SOURCE": "baked"}).env
    found["docker-compose.yml"] = compose_service["environment"]
    found["ConfigMap"] = k8s["ConfigMap"]["data"]
    for container in (server_container(k8s), init_container(k8s)):
        found[f"container {container['name']}"] = {e["name"]: e["value"] for e in container["env"]}
    return found


def test_every_variable_is_a_setting_or_a_known_foreign_one(
    images: dict[str, Image], compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    known = setting_variables()
    assert "CORS_ENABLE" in known and "CAPTIONER_DRAIN_TIMEOUT_S" in known
    for where, env in environments(images, compose_service, k8s).items():
        unknown = set(env) - known - FOREIGN_VARIABLES
        assert not unknown, f"{where} sets variables no setting reads: {sorted(unknown)}"


def test_every_value_is_a_valid_setting(
    images: dict[str, Image],
    compose_service: dict[str, Any],
    k8s: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    known = setting_variables()
    for where, env in environments(images, compose_service, k8s).items():
        for name in known:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            if name in known:
                monkeypatch.setenv(name, value)
        try:
            Settings()
        except Exception as exc:  # the validation error names the field and the value
            pytest.fail(f"{where}: {exc}")


def test_kubernetes_pods_read_the_configmap(k8s: dict[str, dict[str, Any]]) -> None:
    name = k8s["ConfigMap"]["metadata"]["name"]
    for container in (server_container(k8s), init_container(k8s)):
        assert container["envFrom"] == [{"configMapRef": {"name": name}}]


# --- the model: written once, read by the server -----------------------------------------


def test_model_directory_lives_on_the_volume(
    images: dict[str, Image], compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    image = images["volume"]
    (volume,) = image.volumes
    # The installer keeps its lock and staging directories beside the model, so the volume
    # is the model directory's parent.
    assert Path(image.env["CAPTIONER_MODEL_DIR"]).parent == Path(volume)
    (mount,) = compose_service["volumes"]
    assert (mount["type"], mount["target"]) == ("volume", volume)
    assert "CAPTIONER_MODEL_DIR" not in compose_service["environment"]

    model_dir = Path(k8s["ConfigMap"]["data"]["CAPTIONER_MODEL_DIR"])
    claim = k8s["PersistentVolumeClaim"]["metadata"]["name"]
    volumes = {v["name"]: v for v in pod_spec(k8s)["volumes"]}
    model_volume = next(
        n
        for n, v in volumes.items()
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    )
    init_mounts = {m["name"]: m for m in init_container(k8s)["volumeMounts"]}
    server_mounts = {m["name"]: m for m in server_container(k8s)["volumeMounts"]}
    assert Path(init_mounts[model_volume]["mountPath"]) == model_dir.parent
    assert not init_mounts[model_volume].get("readOnly", False)
    assert Path(server_mounts[model_volume]["mountPath"]) == model_dir.parent
    assert server_mounts[model_volume]["readOnly"] is True


def test_server_never_downloads_what_the_init_container_installs(
    k8s: dict[str, dict[str, Any]],
) -> None:
    assert "CAPTIONER_OFFLINE" not in k8s["ConfigMap"]["data"]
    server_env = {e["name"]: e["value"] for e in server_container(k8s)["env"]}
    init_env = {e["name"]: e["value"] for e in init_container(k8s)["env"]}
    assert server_env["CAPTIONER_OFFLINE"] == "true"
    assert init_env["CAPTIONER_OFFLINE"] == "false"


def test_baked_image_is_offline_with_the_model_outside_any_volume(images: dict[str, Image]) -> None:
    image = images["baked"]
    assert image.env["CAPTIONER_OFFLINE"] == "true"
    assert image.volumes == []
    dockerfile = Dockerfile.read()
    (run,) = [rest for keyword, rest in dockerfile.stage("fetch").instructions if keyword == "RUN"]
    assignments, argv = plain_commands(run)[0]
    assert Path(argv[0]).parent == Path(image.env["PATH"].split(":")[0])
    ctx = parse_cli(argv[1:])
    assert ctx.command.name == "download"
    # The build arguments reach the installer as settings it reads.
    assert set(assignments) <= setting_variables()
    (copy,) = [
        rest for keyword, rest in dockerfile.stage("model-baked").instructions if keyword == "COPY"
    ]
    assert copy == f"--from=fetch {ctx.params['dest']} {image.env['CAPTIONER_MODEL_DIR']}"


# --- security and shutdown ---------------------------------------------------------------


def test_everything_runs_as_the_images_non_root_user(
    images: dict[str, Image], k8s: dict[str, dict[str, Any]]
) -> None:
    user, group = (int(x) for x in str(images["volume"].user).split(":"))
    assert user != 0 and group != 0
    security = pod_spec(k8s)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (
        user,
        group,
        group,
    )
    for container in (server_container(k8s), init_container(k8s)):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        tmp = next(v for v in pod_spec(k8s)["volumes"] if v["name"] == mounts["/tmp"])
        assert "emptyDir" in tmp


def test_compose_runs_read_only_with_a_writable_tmp(compose_service: dict[str, Any]) -> None:
    assert compose_service["read_only"] is True
    assert compose_service["tmpfs"] == ["/tmp"]
    assert compose_service["cap_drop"] == ["ALL"]


# What a stopping process needs beyond the worst case it was told: its exit (TensorFlow's
# teardown, the last log lines) and a loaded machine's scheduling.
STOP_MARGIN_S = 5.0


def worst_case_stop_s(env: dict[str, Any]) -> float:
    """The longest a stop may take with these variables (the settings' defaults otherwise):
    the drain, then the shutdown timeout for requests still open."""
    defaults = Settings()
    drain_s = float(env.get("CAPTIONER_DRAIN_TIMEOUT_S", defaults.drain_timeout_s))
    shutdown_s = float(env.get("CAPTIONER_SHUTDOWN_TIMEOUT_S", defaults.shutdown_timeout_s))
    return drain_s + shutdown_s


def test_the_worst_case_stop_fits_every_grace_period(
    compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    """preStop + drain + shutdown timeout, with a margin, inside each grace period."""
    defaults = Settings()
    assert worst_case_stop_s({}) == defaults.drain_timeout_s + defaults.shutdown_timeout_s
    assert worst_case_stop_s({}) + STOP_MARGIN_S <= 30  # the one the docs give docker run

    container = server_container(k8s)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause_s = float(command[1])
    pod_s = pause_s + worst_case_stop_s(k8s["ConfigMap"]["data"])
    assert pod_s + STOP_MARGIN_S <= pod_spec(k8s)["terminationGracePeriodSeconds"]

    compose_s = worst_case_stop_s(compose_service["environment"])
    assert compose_s + STOP_MARGIN_S <= seconds(compose_service["stop_grace_period"])

    # The image runs with the defaults; its usage lines give docker run the time it needs.
    timeouts = re.findall(r"--stop-timeout (\d+)", DOCKERFILE.read_text())
    assert timeouts and all(float(t) >= worst_case_stop_s({}) + STOP_MARGIN_S for t in timeouts)


def test_the_shipped_servers_listen_on_every_interface_explicitly(
    compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]], images: dict[str, Image]
) -> None:
    """The CLI's default is this machine only; a container must say it serves others."""
    assert Settings().host == "127.0.0.1"
    assert all(image.env["CAPTIONER_HOST"] == "0.0.0.0" for image in images.values())
    assert compose_service["environment"]["CAPTIONER_HOST"] == "0.0.0.0"
    assert k8s["ConfigMap"]["data"]["CAPTIONER_HOST"] == "0.0.0.0"


def test_resources_are_requested_and_limited(
    compose_service: dict[str, Any], k8s: dict[str, dict[str, Any]]
) -> None:
    for container in (server_container(k8s), init_container(k8s)):
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}
    resources = compose_service["deploy"]["resources"]
    assert set(resources["limits"]) == {"cpus", "memory"}
    assert compose_service["restart"] == "unless-stopped"


# --- Kubernetes objects point at each other ----------------------------------------------


def test_selectors_and_references_match(k8s: dict[str, dict[str, Any]]) -> None:
    deployment = k8s["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert k8s["Service"]["spec"]["selector"].items() <= labels.items()
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_the_autoscaler_owns_the_replica_count(k8s: dict[str, dict[str, Any]]) -> None:
    hpa = k8s["HorizontalPodAutoscaler"]["spec"]
    assert "replicas" not in k8s["Deployment"]["spec"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in server_container(k8s)["resources"]["requests"]  # utilization needs it
    # A drain leaves a replica serving.
    assert hpa["minReplicas"] > k8s["PodDisruptionBudget"]["spec"]["minAvailable"] >= 1


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


# --- the build context ---------------------------------------------------------------------


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_private() -> None:
    ignore = DockerIgnore.read()
    for sources, _ in Dockerfile.read().context_copies():
        for source in sources:
            assert not ignore.excludes(source.rstrip("/")), f"{source} is excluded"
    for private in (".git/config", ".venv/bin/python", "tests/conftest.py", "data/x.jpg"):
        assert ignore.excludes(private), private
    assert ignore.excludes("src/captioner/__pycache__/cli.cpython-311.pyc")
