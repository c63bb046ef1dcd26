"""deploy/kubernetes: every overlay rendered by kubectl's kustomize (pinned in the dev extra), then checked.

- Schemas: every object against the Kubernetes API's own OpenAPI schemas, strictly (an unknown field
  is an error, as `kubectl apply --validate=strict` makes it), for the oldest and the newest
  Kubernetes release deploy/kubernetes/README.md names, with `kubernetes-validate`; the PodMonitor,
  which those schemas do not know, against the openAPIV3Schema of the Prometheus Operator's own
  PodMonitor CRD (deploy/kubernetes/schemas/, v0.93.0, kept byte for byte: its git blob id is
  checked), made strict the same way.
- Facts: probes on wai's liveness and readiness paths and port, the Service and the PodMonitor on
  that port, the config that loads with every file it names, the cache and the checkpoint on the
  persistent volume, the API keys from the Secret's keys, a GPU per tensor-parallel rank, a grace
  period that covers the preStop sleep and wai's drain, the images' own user, and the autoscaler's
  metric served by the Prometheus adapter from a series vLLM exports; an overlay of several replicas
  (or with the autoscaler) shares their state: the database and Redis URLs from the Secret, and the
  schema migrated by `wai migrate --wait` before wai starts.
Each check is also run on a deliberately broken copy, which it must reject.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import re
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from server.config import Settings, load_settings
from tests.deploy.facts import (
    LIVENESS_PATH,
    METRICS_PATH,
    READINESS_PATH,
    ROOT,
    image_user,
    settings_field,
    stop_time_needed_s,
    venv_tool,
    wai_routes,
)

KUBE = ROOT / "deploy" / "kubernetes"
# Each overlay, the config it must serve, and the Dockerfile its image is built from.
OVERLAYS = {
    "gpu": ("configs/llama-3-8b-instruct.yaml", "docker/Dockerfile.gpu"),
    "gpu-fp8": ("configs/llama-3-8b-instruct-fp8.yaml", "docker/Dockerfile.gpu"),
    "gpu-tp2": ("configs/llama-3-8b-instruct-tp2.yaml", "docker/Dockerfile.gpu"),
    "cpu": ("configs/default.yaml", "docker/Dockerfile"),
    "gpu-replicas": ("configs/llama-3-8b-instruct.yaml", "docker/Dockerfile.gpu"),
    "cpu-replicas": ("configs/default.yaml", "docker/Dockerfile"),
}
# The overlays of several replicas, with the autoscaler (components/shared-state); the others run one.
MANY_REPLICAS = {"gpu-replicas", "cpu-replicas"}
# What each replica must read from the Secret to share its state with the others.
SHARED_STATE_VARIABLES = ["WAI_DATABASE_URL", "WAI_REDIS_URL"]
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
PODMONITOR_CRD = KUBE / "schemas" / "monitoring.coreos.com_podmonitors.yaml"
# git's blob id of prometheus-operator's v0.93.0
# example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml.
PODMONITOR_CRD_BLOB = "5c1bde3d4a5f3131fd6c148ab933193b867173f2"
ADAPTER_VALUES = KUBE / "prometheus-adapter" / "values.yaml"
SECRET_EXAMPLE = KUBE / "secret.example.yaml"
# The startup probe must wait at least this long: a first start downloads 16 GB and loads the model.
STARTUP_BUDGET_S = 600

Objects = list[dict[str, Any]]


class RenderError(Exception):
    pass


def render(overlay: Path) -> Objects:
    command = [str(venv_tool("kubectl")), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(overlay)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RenderError(done.stderr)
    return [item for item in yaml.safe_load_all(done.stdout) if item]


@cache
def _rendered(name: str) -> Objects:
    return render(KUBE / "overlays" / name)


def rendered(name: str) -> Objects:
    return copy.deepcopy(_rendered(name))


def copy_of_the_tree(tmp_path: Path) -> Path:
    """deploy/kubernetes and the configs it reads, laid out as in the repository, to break."""
    shutil.copytree(KUBE, tmp_path / "deploy" / "kubernetes")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path / "deploy" / "kubernetes"


def edit_file(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new, 1))


# --- schemas -----------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """A CRD's structural schema that refuses unknown fields, as the API server's strict validation."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


@cache
def custom_resource_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    crd = yaml.safe_load(PODMONITOR_CRD.read_text())
    validators = {}
    for version in crd["spec"]["versions"]:
        key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
        validators[key] = jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    return validators


def schema_problems(objects: Objects, version: str) -> list[str]:
    problems = []
    for item in objects:
        name = f"{item.get('kind')} {item.get('metadata', {}).get('name')}"
        custom = custom_resource_validators().get((item.get("apiVersion", ""), item.get("kind", "")))
        if custom is not None:
            problems += [
                f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in custom.iter_errors(item)
            ]
            continue
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as error:
            problems.append(f"{name}: {error}")
    return problems


# --- facts -------------------------------------------------------------------------------------


def one(objects: Objects, kind: str) -> dict[str, Any]:
    found = [item for item in objects if item["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words[:-1] else None


def named_port(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}.get(port)


def projected_files(volume: dict[str, Any], objects: Objects) -> dict[str, str]:
    """What a configMap or projected volume shows: relative path -> content."""
    sources = [{"configMap": volume["configMap"]}] if "configMap" in volume else volume["projected"]["sources"]
    maps = {item["metadata"]["name"]: item.get("data", {}) for item in objects if item["kind"] == "ConfigMap"}
    files = {}
    for source in sources:
        data = maps.get(source["configMap"]["name"], {})
        items = source["configMap"].get("items") or [{"key": key, "path": key} for key in data]
        files |= {item["path"]: data[item["key"]] for item in items if item["key"] in data}
    return files


def mounted_files(pod: dict[str, Any], container: dict[str, Any], objects: Objects) -> dict[str, str]:
    """Every file the container sees from ConfigMaps: absolute path -> content."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "configMap" in volume or "projected" in volume:
            for path, content in projected_files(volume, objects).items():
                files[str(PurePosixPath(mount["mountPath"]) / path)] = content
    return files


def persistent_location(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str] | None:
    """Where a container path lives on a PersistentVolumeClaim: (claim, path inside the volume)."""
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod.get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    for mount in sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
        inside = PurePosixPath(path)
        if mount["name"] in claims and inside.is_relative_to(mount["mountPath"]):
            relative = PurePosixPath(mount.get("subPath", "")) / inside.relative_to(mount["mountPath"])
            return claims[mount["name"]], str(relative)
    return None


def load_mounted_config(files: dict[str, str], config_path: str, folder: Path) -> Settings:
    for path, content in files.items():
        target = folder / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return load_settings(folder / config_path.lstrip("/"))


def prestop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] and len(command) == 2 else 0.0


def secret_keys() -> dict[str, set[str]]:
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    return {secret["metadata"]["name"]: set(secret.get("stringData", {})) | set(secret.get("data", {}))}


@cache
def vllm_metric_names() -> frozenset[str]:
    """The `vllm:*` series the installed vLLM's metrics code defines (read, not imported)."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.submodule_search_locations, "vllm is not installed"
    folder = Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics"
    return frozenset(name for path in folder.glob("*.py") for name in re.findall(r'"(vllm:\w+)"', path.read_text()))


def readme_metrics_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Metrics") :].split("\n## ", 1)[0]


def adapter_metrics(values: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The custom metrics the Prometheus adapter serves (name -> series) and what is wrong with its rules."""
    served, problems = {}, []
    for rule in values.get("rules", {}).get("custom", []):
        series = re.match(r"[A-Za-z_:][\w:]*", rule["seriesQuery"].strip("'\"")).group(0)
        if series not in vllm_metric_names() and not series.startswith("wai_"):
            problems.append(f"the adapter reads {series}, which vLLM does not export")
        if f"`{series}`" not in readme_metrics_section():
            problems.append(f"the adapter reads {series}, which README's Metrics section does not list")
        overrides = rule.get("resources", {}).get("overrides", {})
        if (
            overrides.get("pod", {}).get("resource") != "pod"
            or overrides.get("namespace", {}).get("resource") != "namespace"
        ):
            problems.append(f"the rule for {series} does not map the series to pods")
        name = rule.get("name", {})
        if not re.search(name.get("matches", "^$"), series):
            problems.append(f"the rule's name pattern {name.get('matches')} does not match {series}")
            continue
        served[re.sub(name["matches"], name.get("as", ""), series)] = series
    return served, problems


def fact_problems(objects: Objects, overlay: str, folder: Path) -> list[str]:
    """What in an overlay's objects disagrees with wai, its config and its images; [] when nothing does."""
    config_file, dockerfile = OVERLAYS[overlay]
    problems = []
    deployment = one(objects, "Deployment")
    template = deployment["spec"]["template"]
    pod = template["spec"]
    labels = template["metadata"].get("labels", {})
    wai = next(c for c in pod["containers"] if c["name"] == "wai")
    args = wai.get("args", [])

    # Port and probes.
    port = int(option(args, "--port") or 0)
    if option(args, "--host") != "0.0.0.0":
        problems.append("wai does not listen on 0.0.0.0")
    if not {LIVENESS_PATH, READINESS_PATH, METRICS_PATH} <= wai_routes():
        problems.append("wai lacks a probe or metrics route")
    for probe, path in [
        ("readinessProbe", READINESS_PATH),
        ("livenessProbe", LIVENESS_PATH),
        ("startupProbe", READINESS_PATH),
    ]:
        get = wai.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or named_port(wai, get.get("port", "")) != port:
            problems.append(f"{probe} asks {get.get('path')} on {get.get('port')}, not {path} on wai's port {port}")
    startup = wai.get("startupProbe", {})
    if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < STARTUP_BUDGET_S:
        problems.append(f"the startup probe gives the model less than {STARTUP_BUDGET_S} s to load")

    service = one(objects, "Service")
    if not service["spec"].get("selector", {}).items() <= labels.items():
        problems.append("the Service does not select wai's pods")
    if not any(named_port(wai, p.get("targetPort", p["port"])) == port for p in service["spec"]["ports"]):
        problems.append(f"the Service does not send to wai's port {port}")
    monitor = one(objects, "PodMonitor")
    if not monitor["spec"]["selector"].get("matchLabels", {}).items() <= labels.items():
        problems.append("the PodMonitor does not select wai's pods")
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        if named_port(wai, endpoint.get("port", "")) != port or endpoint.get("path") != METRICS_PATH:
            problems.append(
                f"the PodMonitor scrapes {endpoint.get('port')}{endpoint.get('path')}, not {port}{METRICS_PATH}"
            )

    # The config, as mounted, and the files it names.
    files = mounted_files(pod, wai, objects)
    config_path = option(args, "--config") or ""
    if config_path not in files:
        return [*problems, f"--config {config_path} is not mounted (mounted: {sorted(files)})"]
    if files[config_path] != (ROOT / config_file).read_text():
        problems.append(f"the mounted config is not {config_file}")
    settings = load_mounted_config(files, config_path, folder)
    for model in settings.models:
        if model.chat_template and str(PurePosixPath(config_path).parent / model.chat_template) not in files:
            problems.append(f"{model.name}'s chat template {model.chat_template} is not mounted beside the config")

    # Cache and checkpoint on the persistent volume.
    env = {item["name"]: item for item in wai.get("env", [])}
    claims = {item["metadata"]["name"] for item in objects if item["kind"] == "PersistentVolumeClaim"}
    cache_dir = env.get("WAI_CACHE_DIR", {}).get("value", "")
    cache_location = persistent_location(pod, wai, cache_dir)
    if cache_location is None or cache_location[0] not in claims:
        problems.append(f"the cache {cache_dir} is not on a PersistentVolumeClaim of the overlay")
    for name in env:
        if name.startswith("WAI_") and not settings_field(name):
            problems.append(f"{name} sets nothing in wai's config")
    filled = {
        persistent_location(pod, init, item["value"])
        for init in pod.get("initContainers", [])
        for item in init.get("env", [])
        if item["name"] == "WEIGHTS_DIR"
    }
    for model in settings.models:
        path = model.weights.path
        if path and path.startswith("/"):
            location = persistent_location(pod, wai, path)
            if location is None:
                problems.append(f"{model.name}'s weights {path} are not on a persistent volume")
            elif location not in filled:
                problems.append(f"no init container downloads {model.name}'s weights into {path} ({location})")

    # API keys from the Secret.
    keys = env.get("WAI_API_KEYS", {}).get("valueFrom", {}).get("secretKeyRef")
    if keys is None or keys.get("optional"):
        problems.append("WAI_API_KEYS does not come from a required Secret key: wai refuses 0.0.0.0 without keys")
    known = secret_keys()
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] not in known.get(ref["name"], set()):
                problems.append(
                    f"{container['name']} reads key {ref['key']} of Secret {ref['name']}, not in {SECRET_EXAMPLE.name}"
                )

    # GPUs: one per tensor-parallel rank; none on the CPU overlay.
    resources = wai.get("resources", {})
    gpus = int(resources.get("limits", {}).get("nvidia.com/gpu", 0))
    wanted = (
        0 if dockerfile == "docker/Dockerfile" else max(model.engine.tensor_parallel_size for model in settings.models)
    )
    if gpus != wanted or int(resources.get("requests", {}).get("nvidia.com/gpu", gpus)) != gpus:
        problems.append(f"the pod asks for {gpus} GPUs, the config's tensor parallelism needs {wanted}")
    if wanted > 1:
        shm = [m["name"] for m in wai.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
        memory = [
            v for v in pod.get("volumes", []) if v["name"] in shm and v.get("emptyDir", {}).get("medium") == "Memory"
        ]
        if not memory:
            problems.append("tensor-parallel workers get no /dev/shm in memory")

    # Shutdown: the grace period covers the preStop sleep and wai's drain.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    needed = prestop_seconds(wai) + stop_time_needed_s(settings)
    if grace < needed:
        problems.append(f"terminationGracePeriodSeconds {grace} < preStop + drain and shutdown ({needed:.0f} s)")

    # The images' own user.
    user = image_user(ROOT / dockerfile)
    security = pod.get("securityContext", {})
    if (security.get("runAsUser"), security.get("runAsGroup"), security.get("fsGroup")) != (
        *(user or (None, None)),
        (user or (None, None))[1],
    ) or not security.get("runAsNonRoot"):
        problems.append(f"the pod runs as {security}, not as {dockerfile}'s user {user}")
    tag = "cpu" if dockerfile == "docker/Dockerfile" else "gpu"
    if not all(c["image"].endswith(f":{tag}") for c in [*pod["containers"], *pod.get("initContainers", [])]):
        problems.append(f"the containers do not all run the {tag} image")

    # Autoscaling on a metric the adapter serves from vLLM's waiting requests.
    autoscalers = [item for item in objects if item["kind"] == "HorizontalPodAutoscaler"]
    for hpa in autoscalers:
        problems += autoscaler_problems(hpa, deployment)

    # Several replicas are one service only with their state shared.
    if deployment["spec"].get("replicas", 1) > 1 or autoscalers:
        problems += shared_state_problems(pod, wai, objects)
    return problems


def autoscaler_problems(hpa: dict[str, Any], deployment: dict[str, Any]) -> list[str]:
    problems = []
    target = hpa["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
        problems.append(f"the autoscaler scales {target['kind']} {target['name']}")
    served, adapter_problems = adapter_metrics(yaml.safe_load(ADAPTER_VALUES.read_text()))
    problems += adapter_problems
    for metric in hpa["spec"].get("metrics", []):
        name = metric.get("pods", {}).get("metric", {}).get("name")
        if metric["type"] != "Pods" or served.get(name) != "vllm:num_requests_waiting":
            problems.append(f"the autoscaler's metric {name} is not the adapter's vllm:num_requests_waiting per pod")
    if deployment["spec"].get("replicas", 1) < hpa["spec"].get("minReplicas", 1):
        problems.append("the Deployment's replicas are below the autoscaler's minReplicas: each apply scales it down")
    return problems


def required_secret(container: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The Secret key a container's variable comes from, unless it is a literal or optional."""
    item: dict[str, Any] = next((item for item in container.get("env", []) if item["name"] == name), {})
    ref = item.get("valueFrom", {}).get("secretKeyRef")
    return None if ref is None or ref.get("optional") else ref


def shared_state_problems(pod: dict[str, Any], wai: dict[str, Any], objects: Objects) -> list[str]:
    """What keeps several replicas of an overlay from sharing their state (components/shared-state)."""
    problems = [
        f"several replicas without {name} from a required Secret key: each would keep its own state"
        for name in SHARED_STATE_VARIABLES
        if required_secret(wai, name) is None
    ]
    # Each replica copies the fine-tunes it serves out of the database into its adapters_dir.
    env = {item["name"]: item.get("value") for item in wai.get("env", [])}
    adapters_dir = env.get("WAI_ADAPTERS_DIR") or str(PurePosixPath(env.get("WAI_CACHE_DIR") or "") / "adapters")
    if persistent_location(pod, wai, adapters_dir) is not None:
        problems.append(f"the replicas' fine-tune copies ({adapters_dir}) share the cache volume")
    config_path = option(wai.get("args", []), "--config")
    migrations = [
        init
        for init in pod.get("initContainers", [])
        if [*init.get("command", []), *init.get("args", [])][:2] == ["wai", "migrate"]
    ]
    if not migrations:
        return [*problems, "several replicas and no init container runs `wai migrate`"]
    words = [*migrations[0].get("command", []), *migrations[0].get("args", [])]
    if option(words, "--wait") is None:
        problems.append("`wai migrate` runs without --wait: a database starting with the release fails the pod")
    if option(words, "--config") != config_path or config_path not in mounted_files(pod, migrations[0], objects):
        problems.append(f"`wai migrate` does not read wai's mounted config {config_path}")
    if required_secret(migrations[0], "WAI_DATABASE_URL") != required_secret(wai, "WAI_DATABASE_URL"):
        problems.append("`wai migrate` reads another WAI_DATABASE_URL than wai")
    return problems


# --- tests -------------------------------------------------------------------------------------


def test_the_vendored_podmonitor_crd_is_the_operators() -> None:
    content = PODMONITOR_CRD.read_bytes()
    assert hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest() == PODMONITOR_CRD_BLOB
    assert schema_problems([yaml.safe_load(content)], KUBERNETES_VERSIONS[-1]) == []


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_overlay_is_valid_kubernetes(overlay: str, version: str) -> None:
    objects = rendered(overlay)
    kinds = {item["kind"] for item in objects}
    assert kinds >= {"Deployment", "Service", "PodMonitor", "PersistentVolumeClaim", "ConfigMap"}
    assert ("HorizontalPodAutoscaler" in kinds) == (overlay in MANY_REPLICAS)
    assert (one(objects, "Deployment")["spec"]["replicas"] > 1) == (overlay in MANY_REPLICAS)
    assert schema_problems(objects, version) == []


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_overlay_agrees_with_wai(overlay: str, tmp_path: Path) -> None:
    assert fact_problems(rendered(overlay), overlay, tmp_path) == []


def test_the_secret_example_is_valid_kubernetes() -> None:
    assert schema_problems([yaml.safe_load(SECRET_EXAMPLE.read_text())], KUBERNETES_VERSIONS[-1]) == []


def test_the_adapter_reads_a_series_vllm_exports() -> None:
    assert "vllm:num_requests_waiting" in vllm_metric_names()
    served, problems = adapter_metrics(yaml.safe_load(ADAPTER_VALUES.read_text()))
    assert problems == [] and served == {"vllm_num_requests_waiting": "vllm:num_requests_waiting"}


@pytest.mark.parametrize(
    ("file", "old", "new", "error"),
    [
        ("base/deployment.yaml", "          readinessProbe:", "          readinesProbe:", "readinesProbe"),
        ("base/service.yaml", "      port: 8000", "      port: http", "port"),
        ("base/podmonitor.yaml", "  podMetricsEndpoints:", "  podMetricEndpoints:", "podMetricEndpoints"),
        ("base/podmonitor.yaml", "      interval: 10s", "      interval: 10 seconds", "interval"),
    ],
)
def test_the_schemas_reject_a_broken_copy(tmp_path: Path, file: str, old: str, new: str, error: str) -> None:
    tree = copy_of_the_tree(tmp_path)
    edit_file(tree / file, old, new)
    problems = schema_problems(render(tree / "overlays" / "gpu"), KUBERNETES_VERSIONS[-1])
    assert any(error in problem for problem in problems), problems


def test_kustomize_rejects_a_missing_file(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    (tree.parent.parent / "configs" / "llama-3-8b-instruct-fp8.yaml").unlink()
    with pytest.raises(RenderError, match="llama-3-8b-instruct-fp8.yaml"):
        render(tree / "overlays" / "gpu-fp8")


def test_a_chat_template_left_out_of_the_volume_is_caught(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    edit_file(tree / "overlays" / "gpu" / "kustomization.yaml", "  - ../../components/llama-3\n", "")
    problems = fact_problems(render(tree / "overlays" / "gpu"), "gpu", tmp_path / "mounted")
    assert any("chat template templates/llama-3-instruct.jinja is not mounted" in p for p in problems), problems


def test_replicas_without_the_shared_state_are_caught(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    edit_file(tree / "overlays" / "gpu-replicas" / "kustomization.yaml", "  - ../../components/shared-state\n", "")
    problems = fact_problems(render(tree / "overlays" / "gpu-replicas"), "gpu-replicas", tmp_path / "mounted")
    assert any("several replicas without WAI_DATABASE_URL" in p for p in problems), problems
    assert any("no init container runs `wai migrate`" in p for p in problems), problems


def wai_container(objects: Objects) -> dict[str, Any]:
    return next(c for c in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"] if c["name"] == "wai")


def pod_spec(objects: Objects) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def config_map(objects: Objects) -> dict[str, Any]:
    return next(item for item in objects if item["kind"] == "ConfigMap" and "config.yaml" in item.get("data", {}))


def env_named(container: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item for item in container["env"] if item["name"] == name)


def init_container(objects: Objects, name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(objects)["initContainers"] if c["name"] == name)


def written_in_the_manifest(variable: dict[str, Any], value: str) -> None:
    del variable["valueFrom"]
    variable["value"] = value


def autoscaler_of_another_overlay(objects: Objects) -> None:
    objects.append(one(rendered("gpu-replicas"), "HorizontalPodAutoscaler"))


Edit = Callable[[Objects], None]
MISTAKES: list[tuple[str, str, Edit, str]] = [
    (
        "readiness on liveness's path",
        "gpu",
        lambda o: wai_container(o)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "readinessProbe asks /healthz",
    ),
    (
        "liveness on another port",
        "gpu",
        lambda o: wai_container(o)["livenessProbe"]["httpGet"].update(port=8080),
        "livenessProbe",
    ),
    (
        "a startup probe too short",
        "gpu",
        lambda o: wai_container(o)["startupProbe"].update(failureThreshold=6),
        "less than 600 s",
    ),
    ("wai on another port", "cpu", lambda o: wai_container(o)["args"].__setitem__(-1, "9000"), "wai's port 9000"),
    (
        "the Service on another port",
        "gpu",
        lambda o: one(o, "Service")["spec"]["ports"][0].update(targetPort=9000),
        "Service does not send",
    ),
    (
        "the PodMonitor on another path",
        "gpu",
        lambda o: one(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(path="/stats"),
        "PodMonitor scrapes",
    ),
    (
        "a grace period shorter than the drain",
        "gpu",
        lambda o: pod_spec(o).update(terminationGracePeriodSeconds=30),
        "terminationGracePeriodSeconds 30",
    ),
    (
        "a longer preStop sleep",
        "gpu-tp2",
        lambda o: wai_container(o)["lifecycle"]["preStop"]["exec"].update(command=["sleep", "20"]),
        "preStop + drain",
    ),
    (
        "API keys from a key the Secret lacks",
        "gpu",
        lambda o: env_named(wai_container(o), "WAI_API_KEYS")["valueFrom"]["secretKeyRef"].update(key="keys"),
        "reads key keys of Secret wai-secrets",
    ),
    (
        "API keys optional",
        "gpu",
        lambda o: env_named(wai_container(o), "WAI_API_KEYS")["valueFrom"]["secretKeyRef"].update(optional=True),
        "WAI_API_KEYS does not come from a required Secret key",
    ),
    (
        "a misspelt wai variable",
        "cpu",
        lambda o: env_named(wai_container(o), "WAI_API_KEYS").update(name="WAI_API_KEY"),
        "WAI_API_KEY sets nothing",
    ),
    (
        "one GPU for tensor parallelism over two",
        "gpu-tp2",
        lambda o: wai_container(o)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
        "asks for 1 GPUs",
    ),
    (
        "a GPU on the CPU overlay",
        "cpu",
        lambda o: wai_container(o)["resources"]["limits"].update({"nvidia.com/gpu": 1}),
        "needs 0",
    ),
    (
        "no shared memory for tensor parallelism",
        "gpu-tp2",
        lambda o: pod_spec(o)["volumes"].__setitem__(0, {"name": "dshm", "emptyDir": {}}),
        "no /dev/shm",
    ),
    (
        "the cache off the volume",
        "gpu",
        lambda o: env_named(wai_container(o), "WAI_CACHE_DIR").update(value="/var/cache/wai"),
        "not on a PersistentVolumeClaim",
    ),
    (
        "weights downloaded elsewhere",
        "gpu-fp8",
        lambda o: env_named(pod_spec(o)["initContainers"][0], "WEIGHTS_DIR").update(value="/cache/llama3"),
        "no init container downloads",
    ),
    (
        "the config of another overlay",
        "gpu-fp8",
        lambda o: config_map(o)["data"].update(
            {"config.yaml": (ROOT / "configs" / "llama-3-8b-instruct.yaml").read_text()}
        ),
        "not configs/llama-3-8b-instruct-fp8.yaml",
    ),
    ("a root user", "cpu", lambda o: pod_spec(o)["securityContext"].update(runAsUser=0), "the pod runs as"),
    ("the CPU image on a GPU overlay", "gpu", lambda o: wai_container(o).update(image="wai:cpu"), "the gpu image"),
    (
        "another metric for the autoscaler",
        "gpu-replicas",
        lambda o: one(o, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"].update(
            name="vllm:num_requests_waiting"
        ),
        "is not the adapter's",
    ),
    (
        "the autoscaler on another Deployment",
        "gpu-replicas",
        lambda o: one(o, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(name="vllm"),
        "scales Deployment vllm",
    ),
    (
        "fewer replicas than the autoscaler's floor",
        "cpu-replicas",
        lambda o: one(o, "Deployment")["spec"].update(replicas=1),
        "below the autoscaler's minReplicas",
    ),
    (
        "several replicas of the one-replica overlay",
        "gpu",
        lambda o: one(o, "Deployment")["spec"].update(replicas=3),
        "several replicas without WAI_REDIS_URL",
    ),
    (
        "the autoscaler on the one-replica overlay",
        "cpu",
        autoscaler_of_another_overlay,
        "no init container runs `wai migrate`",
    ),
    (
        "the database URL written in the manifest",
        "gpu-replicas",
        lambda o: written_in_the_manifest(env_named(wai_container(o), "WAI_DATABASE_URL"), "postgresql://wai@db/wai"),
        "several replicas without WAI_DATABASE_URL",
    ),
    (
        "the Redis URL optional",
        "cpu-replicas",
        lambda o: env_named(wai_container(o), "WAI_REDIS_URL")["valueFrom"]["secretKeyRef"].update(optional=True),
        "several replicas without WAI_REDIS_URL",
    ),
    (
        "the database URL from a key the Secret lacks",
        "gpu-replicas",
        lambda o: env_named(wai_container(o), "WAI_DATABASE_URL")["valueFrom"]["secretKeyRef"].update(key="db"),
        "reads key db of Secret wai-secrets",
    ),
    (
        "the fine-tune copies on the cache volume",
        "gpu-replicas",
        lambda o: env_named(wai_container(o), "WAI_ADAPTERS_DIR").update(value="/cache/adapters"),
        "share the cache volume",
    ),
    (
        "migrations without waiting for the database",
        "gpu-replicas",
        lambda o: init_container(o, "migrate").update(command=["wai", "migrate", "--config", "/etc/wai/config.yaml"]),
        "without --wait",
    ),
    (
        "migrations on another config",
        "cpu-replicas",
        lambda o: init_container(o, "migrate")["command"].__setitem__(3, "/etc/wai/other.yaml"),
        "does not read wai's mounted config",
    ),
    (
        "migrations of another database",
        "gpu-replicas",
        lambda o: env_named(init_container(o, "migrate"), "WAI_DATABASE_URL")["valueFrom"]["secretKeyRef"].update(
            key="api-keys"
        ),
        "reads another WAI_DATABASE_URL",
    ),
]


@pytest.mark.parametrize(("mistake", "overlay", "edit", "problem"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_broken_copy_is_caught(mistake: str, overlay: str, edit: Edit, problem: str, tmp_path: Path) -> None:
    objects = rendered(overlay)
    edit(objects)
    problems = fact_problems(objects, overlay, tmp_path)
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize(
    ("mistake", "edit", "problem"),
    [
        (
            "a series vLLM does not export",
            lambda r: r.update(seriesQuery='vllm:requests_queued{pod!=""}'),
            "does not export",
        ),
        ("no pod mapping", lambda r: r["resources"]["overrides"].pop("pod"), "does not map the series to pods"),
        ("a name pattern that misses", lambda r: r["name"].update(matches="^wai_(.*)$"), "does not match"),
    ],
)
def test_a_broken_adapter_rule_is_caught(mistake: str, edit: Callable[[dict[str, Any]], Any], problem: str) -> None:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    edit(values["rules"]["custom"][0])
    _, problems = adapter_metrics(values)
    assert any(problem in found for found in problems), problems
