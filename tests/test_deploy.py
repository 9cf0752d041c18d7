"""The deployment recipes in deploy/: the Dockerfile, the compose file and the Kustomize overlays.

Each overlay is rendered with the real ``kubectl kustomize`` and every object is validated against
the Kubernetes schemas that ``kubernetes-validate`` ships (strict: an unknown field fails). The
Dockerfile is read with ``dockerfile-parse``. The entrypoint itself runs in test_deploy_entrypoint.py.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from deploy.image_requirements import RequirementsError, split_requirements
from deploy.settings import CHECKPOINT_PREFIX, CHECKPOINT_ROOT, KNOWN, WORK_DIR
from tritonmm_server.ops.repository import list_models

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ["cpu", "gpu"]
# The oldest Kubernetes the manifests are meant for, and the newest schemas kubernetes-validate has.
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]
BUNDLED = set(list_models(ROOT / "model_repository"))


# --- the image's requirements -------------------------------------------------------------------


def test_image_requirements_pin_torch_and_leave_out_the_local_tritonserver() -> None:
    text = (ROOT / "tritonmm_server" / "requirements.txt").read_text()
    torch, rest = split_requirements(text)
    local_pin = next(line for line in text.splitlines() if line.startswith("torch=="))
    assert torch == local_pin  # the image's CUDA torch is the version the tests run as +cpu
    names = {re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower() for line in rest}
    assert "nvidia-pytriton" not in names and "torch" not in names
    declared = {
        re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    assert names == declared - {"nvidia-pytriton", "torch"}  # nothing else is dropped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("torch==2.13.0\ntorchvision\n", "must never be installed"),
        ("torch>=2\n", "one exact pin"),
        ("transformers\n", "one exact pin"),
        ("torch==2.13.0\n-r other.txt\n", "not expected"),
    ],
)
def test_image_requirements_refuse_what_would_break_the_image(text: str, message: str) -> None:
    with pytest.raises(RequirementsError, match=message):
        split_requirements(text)


# --- the Dockerfile --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DEPLOY / "Dockerfile"))


def _instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [entry["value"] for entry in parser.structure if entry["instruction"] == name]


def _copy_sources(parser: DockerfileParser) -> list[str]:
    sources = []
    for value in _instructions(parser, "COPY"):
        words = [word for word in value.split() if not word.startswith("--")]
        assert "--from" not in value, "a COPY from another stage: check its sources another way"
        sources += words[:-1]  # the last word is the destination
    return sources


def test_dockerfile_base_image_is_nvidia_triton_with_a_pinned_tag(dockerfile: DockerfileParser) -> None:
    assert dockerfile.parent_images == [dockerfile.baseimage]  # one stage
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3", dockerfile.baseimage), dockerfile.baseimage


def test_dockerfile_copies_only_paths_that_exist_and_the_build_context_admits(dockerfile: DockerfileParser) -> None:
    sources = _copy_sources(dockerfile)
    assert {"tritonmm/", "tritonmm_server/", "model_repository/", "deploy/entrypoint.py"} <= set(sources)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    admitted = [line[1:] for line in ignore if line.startswith("!")]
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert any(_admits(pattern, source) for pattern in admitted), f"COPY {source}: excluded by the dockerignore"


def _admits(pattern: str, source: str) -> bool:
    if pattern.endswith("/**"):
        return source.rstrip("/") == pattern[:-3] or source.startswith(pattern[:-2])
    return source == pattern


def test_dockerfile_copies_every_deploy_module_the_entrypoint_imports(dockerfile: DockerfileParser) -> None:
    copied = set(_copy_sources(dockerfile))
    wanted = {"deploy/__init__.py", "deploy/entrypoint.py"}
    for node in ast.walk(ast.parse((DEPLOY / "entrypoint.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deploy."):
            wanted.add(node.module.replace(".", "/") + ".py")
    assert wanted <= copied, f"not copied into the image: {wanted - copied}"


def test_dockerfile_runs_the_entrypoint_unprivileged_with_health_check_and_ports(dockerfile: DockerfileParser) -> None:
    assert json.loads(_instructions(dockerfile, "ENTRYPOINT")[-1])[-2:] == ["-m", "deploy.entrypoint"]
    user = _instructions(dockerfile, "USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric, so Kubernetes can check runAsNonRoot
    assert set(" ".join(_instructions(dockerfile, "EXPOSE")).split()) == {"8000", "8001", "8002"}
    assert "/v2/health/ready" in _instructions(dockerfile, "HEALTHCHECK")[-1]


def test_dockerfile_settings_are_entrypoint_settings_and_the_hub_is_offline(dockerfile: DockerfileParser) -> None:
    envs = dockerfile.envs
    assert {name for name in envs if name.startswith("TMM_")} <= KNOWN
    assert envs["TMM_TRITONSERVER_DIR"] == "/opt/tritonserver"
    assert envs["HF_HUB_OFFLINE"] == "1" and envs["TRANSFORMERS_OFFLINE"] == "1"
    install = "\n".join(_instructions(dockerfile, "RUN"))
    assert "torchvision" in install and "nvidia-pytriton" not in install  # the guard, and no local binary


# --- the compose file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_joins_dify_network_with_gpu_health_check_and_ports(compose: dict[str, Any]) -> None:
    triton = compose["services"]["triton"]  # the name in the plugin's server URL
    assert triton["networks"] == ["dify"]
    assert compose["networks"]["dify"] == {"name": "${DIFY_NETWORK:-docker_default}", "external": True}
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "http://127.0.0.1:8000/v2/health/ready" in triton["healthcheck"]["test"]
    assert {port.rsplit(":", 1)[-1] for port in triton["ports"]} == {"8000", "8001", "8002"}
    assert "/models:ro" in [volume.split("}:", 1)[-1] for volume in triton["volumes"]]  # read-only checkpoints
    build = triton["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_settings_name_settings_and_bundled_models(compose: dict[str, Any]) -> None:
    for name in compose["services"]["triton"]["environment"]:
        if name.startswith(CHECKPOINT_PREFIX):
            assert name.removeprefix(CHECKPOINT_PREFIX) in BUNDLED, name
        else:
            assert name in KNOWN, name


def test_compose_says_which_credentials_to_enter() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert "http://triton:8000" in text and "triton:8001" in text


# --- Kubernetes -------------------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    assert shutil.which("kubectl"), "kubectl renders the overlays"
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: found {len(found)}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    kinds = sorted(obj["kind"] for obj in rendered[overlay])
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PersistentVolumeClaim"]
    assert kinds == sorted([*expected, "PodDisruptionBudget", "Service", "Service"])
    for obj in rendered[overlay]:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_rejects_a_misspelled_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = json.loads(json.dumps(one(rendered["cpu"], "Deployment")))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_only_the_gpu_overlay_requests_a_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    gpu = container(rendered["gpu"])["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1 and gpu["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in json.dumps(container(rendered["cpu"])["resources"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_triton_health_endpoints_on_the_http_port(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    triton = container(rendered[overlay])
    ports = {port["name"]: port["containerPort"] for port in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    paths = {probe: triton[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert paths == {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    assert {triton[probe]["httpGet"]["port"] for probe in paths} == {"http"}
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800  # large checkpoints load for minutes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pdb_and_hpa_select_the_deployment(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {port["name"] for port in container(objects)["ports"]}
    service = one(objects, "Service", "tritonmm")
    headless = one(objects, "Service", "tritonmm-headless")
    assert headless["spec"]["clusterIP"] == "None" and service["spec"].get("clusterIP") != "None"
    assert {port["name"] for port in service["spec"]["ports"]} == {"http", "grpc", "metrics"}
    assert {port["name"] for port in headless["spec"]["ports"]} == {"http", "grpc"}
    for svc in (service, headless):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {port["targetPort"] for port in svc["spec"]["ports"]} <= container_ports
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count


def test_cpu_scales_on_cpu_and_gpu_on_the_metrics_prometheus_adapter_serves(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    cpu = one(rendered["cpu"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [(metric["type"], metric["resource"]["name"]) for metric in cpu] == [("Resource", "cpu")]
    gpu = one(rendered["gpu"], "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert {metric["type"] for metric in gpu} == {"Pods"}
    values = yaml.safe_load((K8S / "overlays" / "gpu" / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"]: rule["seriesQuery"] for rule in values["rules"]["custom"]}
    assert {metric["pods"]["metric"]["name"] for metric in gpu} == set(served)
    assert any("nv_inference_queue_duration_us" in query for query in served.values())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_is_scraped_runs_unprivileged_and_gets_its_volumes(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, dockerfile: DockerfileParser
) -> None:
    objects = rendered[overlay]
    pod = one(objects, "Deployment")["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert (annotations["prometheus.io/scrape"], annotations["prometheus.io/port"]) == ("true", "8002")
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == _instructions(dockerfile, "USER")[-1].split(":")[0]
    triton = container(objects)
    assert triton["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount for mount in triton["volumeMounts"]}
    # Writable where the entrypoint and the python backend write; checkpoints read-only.
    assert {dockerfile.envs[WORK_DIR], "/dev/shm", "/tmp"} <= set(mounts)
    assert mounts[dockerfile.envs[CHECKPOINT_ROOT]]["readOnly"] is True
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    claim = volumes[mounts[dockerfile.envs[CHECKPOINT_ROOT]]["name"]]["persistentVolumeClaim"]["claimName"]
    assert one(objects, "PersistentVolumeClaim", claim)
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_and_grace_period_cover_in_flight_streams(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    settings = one(objects, "ConfigMap")["data"]
    triton = container(objects)
    assert triton["envFrom"] == [{"configMapRef": {"name": one(objects, "ConfigMap")["metadata"]["name"]}}]
    for name in settings:
        if name.startswith(CHECKPOINT_PREFIX):
            assert name.removeprefix(CHECKPOINT_PREFIX) in BUNDLED, name
        else:
            assert name in KNOWN, name
    pre_stop = int(triton["lifecycle"]["preStop"]["exec"]["command"][-1])
    # TritonServer.stop() waits the exit timeout plus 15 s before it kills the stubs.
    needed = pre_stop + int(settings["TMM_EXIT_TIMEOUT"]) + 15
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed


def test_servicemonitor_component_replaces_the_pod_annotations(tmp_path: Path) -> None:
    # An overlay of the user's that adds the optional component (its CRD has no schema here).
    base = Path(os.path.relpath(K8S, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{base / 'overlays' / 'gpu'}]\ncomponents: [{base / 'components' / 'servicemonitor'}]\n"
    )
    objects = kustomize(tmp_path)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "tritonmm")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= one(objects, "Service", "tritonmm-headless")["metadata"]["labels"].items()
    )
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "false"  # not scraped twice


def test_checkpoint_loader_pod_mounts_the_overlays_claim_writable(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = yaml.safe_load((K8S / "tools" / "checkpoint-loader.yaml").read_text())
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert one(rendered["gpu"], "PersistentVolumeClaim", claim["claimName"])
    assert not claim.get("readOnly") and not pod["spec"]["containers"][0]["volumeMounts"][0].get("readOnly")
    assert ":" in pod["spec"]["containers"][0]["image"] and not pod["spec"]["containers"][0]["image"].endswith(
        ":latest"
    )
    # The files it writes belong to the server's user.
    assert (
        pod["spec"]["securityContext"]["runAsUser"]
        == one(rendered["gpu"], "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )
