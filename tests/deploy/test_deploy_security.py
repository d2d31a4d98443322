"""SECURITY.md's container posture, beyond non-root and read-only (test_deploy_wiring.py):
no privilege can be gained, the default seccomp profile, no service-account token, the
model read-only for the server, nothing that reaches into the host."""

from __future__ import annotations

from typing import Any

from deployfiles import Dockerfile, compose_model, k8s_objects


def _pod(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return k8s["Deployment"]["spec"]["template"]["spec"]


def test_compose_gains_no_privilege_and_shares_nothing_with_the_host() -> None:
    (service,) = compose_model()["services"].values()
    assert "no-new-privileges:true" in service["security_opt"]
    for key in ("privileged", "pid", "network_mode", "ipc", "cap_add", "devices"):
        assert not service.get(key), key
    # Only the named volume is mounted: no host directory.
    assert [volume["type"] for volume in service["volumes"]] == ["volume"]


def test_kubernetes_pod_is_locked_down() -> None:
    k8s = k8s_objects()
    pod = _pod(k8s)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    assert all("hostPath" not in volume for volume in pod["volumes"])
    for container in pod["containers"] + pod["initContainers"]:
        context = container["securityContext"]
        assert not context.get("privileged")
        assert not context.get("capabilities", {}).get("add")
    (server,) = pod["containers"]
    (model,) = [m for m in server["volumeMounts"] if m["mountPath"] == "/var/lib/captioner"]
    assert model["readOnly"] is True  # only the init container writes the model


def test_no_image_stage_switches_back_to_root() -> None:
    dockerfile = Dockerfile.read()
    for source in ("volume", "baked"):
        user = dockerfile.image({"MODEL_SOURCE": source}).user
        assert user is not None and user.split(":")[0] not in ("0", "root"), source
