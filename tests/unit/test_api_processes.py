"""Several front-end processes (`wai serve --api-processes N`), the parts that need no engine:
the setting and its flag, how each metric combines over processes (with real processes writing),
one fine-tune store seen through two processes' views, and one batch runner per store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.multiprocess import MultiProcessCollector
from safetensors.numpy import save

from server import cli, metrics
from server.batch.jobs import SubmittingStore
from server.batch.store import BatchStore, NewItem
from server.cli import main
from server.config import ModelConfig, load_settings
from server.errors import WaiError
from server.serving.lora import AdapterStore
from server.serving.lora_checks import ADAPTER_WEIGHTS, BaseModelShapes

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MODEL = "@cf/test/model"


# --- the setting ----------------------------------------------------------------------------------


def test_api_processes_is_1_unless_set_and_the_flag_wins_over_env_and_file(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text("api_processes: 3\n")
    monkeypatch.delenv("WAI_API_PROCESSES", raising=False)
    assert load_settings().api_processes == 1
    assert load_settings(config).api_processes == 3
    monkeypatch.setenv("WAI_API_PROCESSES", "4")
    assert load_settings(config).api_processes == 4
    assert load_settings(config, api_processes=2).api_processes == 2  # what `--api-processes 2` passes


def test_fewer_than_one_process_is_refused(tmp_path, capsys, monkeypatch):
    # `wai serve` sends its logs to this test's captured stream, closed once the test ends: not here.
    monkeypatch.setattr(cli, "configure_logging", lambda: None)
    config = tmp_path / "config.yaml"
    config.write_text("models: []\n")
    assert main(["serve", "--config", str(config), "--api-processes", "0"]) == 2
    assert "api_processes" in capsys.readouterr().err


# --- metrics across processes ---------------------------------------------------------------------


def gauges() -> dict[str, Gauge]:
    return {value._name: value for value in vars(metrics).values() if isinstance(value, Gauge)}


def test_every_gauge_says_how_it_combines_and_the_readme_row_says_it_too():
    rows = dict(re.findall(r"^\| `(wai_\w+)` \| [\w, ]* \| (.*) \|$", README.read_text(), flags=re.MULTILINE))
    assert gauges()
    for name, gauge in gauges().items():
        mode = gauge._multiprocess_mode
        assert mode in metrics.ACROSS_PROCESSES, name  # never the default, one series per process
        assert rows[name].endswith(f"with several front ends, {metrics.ACROSS_PROCESSES[mode]}"), name


# One front-end process's share of work: `requests` answered, `in_flight` still open, its engine ready or not.
WRITER = """
import sys
from server import metrics
requests, in_flight, ready = map(int, sys.argv[1:])
for _ in range(requests):
    metrics.REQUESTS.labels("m", "none", "openai", "200", "none").inc()
    metrics.REQUEST_DURATION.labels("m", "none").observe(0.2)
metrics.IN_FLIGHT.labels("m").set(in_flight)
metrics.ENGINE_READY.labels("m").set(ready)
print(__import__("os").getpid())
"""


def write_as_a_process(folder: Path, requests: int, in_flight: int, ready: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(requests), str(in_flight), str(ready)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def combined(folder: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_counters_and_histograms_add_up_over_processes_and_gauges_combine_as_declared(tmp_path, monkeypatch):
    first = write_as_a_process(tmp_path, requests=3, in_flight=2, ready=1)
    second = write_as_a_process(tmp_path, requests=4, in_flight=5, ready=0)
    samples = combined(tmp_path)
    labels = {"model": "m", "lora": "none", "protocol": "openai", "status": "200", "code": "none"}
    assert value(samples, "wai_requests_total", **labels) == 7
    assert value(samples, "wai_request_duration_seconds_count", model="m", lora="none") == 7
    assert value(samples, "wai_request_duration_seconds_bucket", model="m", lora="none", le="0.25") == 7
    assert value(samples, "wai_requests_in_flight", model="m") == 7  # livesum
    assert value(samples, "wai_engine_ready", model="m") == 0  # livemin: one front end cannot reach it

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics.forget_process(second)  # it exited: its gauges leave, what it counted stays
    samples = combined(tmp_path)
    assert value(samples, "wai_requests_total", **labels) == 7
    assert value(samples, "wai_requests_in_flight", model="m") == 2
    assert value(samples, "wai_engine_ready", model="m") == 1
    assert first != second


def test_metrics_served_are_this_process_alone_without_a_multiprocess_folder():
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    from prometheus_client import REGISTRY

    assert metrics.registry() is REGISTRY


# --- one fine-tune store, two processes -----------------------------------------------------------

LORA_MODEL = ModelConfig(name=MODEL, weights={"path": "/x"}, lora={"enabled": True})
SHAPES = BaseModelShapes(model_type="llama", linear_weights={"model.layers.0.self_attn.q_proj": (8, 8)})


def store(root: Path, first: bool = True) -> AdapterStore:
    """One process's view of the store; only the first clears it at start, as the supervisor does."""
    return AdapterStore(root, [LORA_MODEL], {MODEL: SHAPES}, clear_at_start=first)


def upload(adapters: AdapterStore, name: str) -> None:
    """A valid rank-2 adapter on q_proj, through the store's own upload path."""
    adapters.create(MODEL, name)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    weights = {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((2, 8), np.float32),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": np.ones((8, 2), np.float32),
    }
    for file_name, content in (("adapter_config.json", json.dumps(config).encode()), (ADAPTER_WEIGHTS, save(weights))):
        with adapters.upload_file() as (file, path):
            file.write(content)
            file.close()
            adapters.add_asset(name, file_name, path)


def code_of(call) -> int:
    with pytest.raises(WaiError) as raised:
        call()
    return raised.value.code


def test_a_finetune_uploaded_in_one_process_is_served_by_the_other_by_the_same_engine_id(tmp_path):
    one, other = store(tmp_path), store(tmp_path, first=False)
    assert other.finetunes() == []  # it looked before the upload
    upload(one, "ft")
    assert [f.name for f in other.finetunes()] == ["ft"]
    assert other.adapter_for(MODEL, "ft") == one.adapter_for(MODEL, "ft")


def test_two_processes_never_give_two_adapters_one_engine_id(tmp_path):
    one, other = store(tmp_path), store(tmp_path, first=False)
    upload(one, "a")
    upload(other, "b")
    ids = {one.adapter_for(MODEL, "b").engine_id, other.adapter_for(MODEL, "a").engine_id}
    assert len(ids) == 2
    assert ids == {other.adapter_for(MODEL, "b").engine_id, one.adapter_for(MODEL, "a").engine_id}


def test_new_files_get_a_new_engine_id_in_every_process(tmp_path):
    one, other = store(tmp_path), store(tmp_path, first=False)
    upload(one, "ft")
    before = other.adapter_for(MODEL, "ft")
    with one.upload_file() as (file, path):
        file.write(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}).encode())
        file.close()
        with pytest.raises(WaiError):  # rank 4 config against rank 2 weights: refused, nothing changes
            one.add_asset("ft", "adapter_config.json", path)
    assert other.adapter_for(MODEL, "ft") == before
    with one.upload_file() as (file, path):  # the weights again: the engine must load them afresh
        file.write((tmp_path / one.get("ft").id / ADAPTER_WEIGHTS).read_bytes())
        file.close()
        one.add_asset("ft", ADAPTER_WEIGHTS, path)
    after = other.adapter_for(MODEL, "ft")
    assert after.engine_id > before.engine_id and after.key != before.key
    assert one.adapter_for(MODEL, "ft") == after


def test_a_finetune_deleted_in_one_process_is_gone_from_the_other(tmp_path):
    one, other = store(tmp_path), store(tmp_path, first=False)
    upload(one, "ft")
    finetune_id = other.get("ft").id
    other.adapter_for(MODEL, "ft")  # the other process has served it
    one.delete(finetune_id)
    assert code_of(lambda: other.adapter_for(MODEL, "ft")) == 3041
    assert code_of(lambda: other.adapter_for(MODEL, finetune_id)) == 3041
    assert other.finetunes() == []
    assert code_of(lambda: other.delete("ft")) == code_of(lambda: one.get("ft"))  # not found, in both


def test_a_name_is_taken_once_across_processes(tmp_path):
    one, other = store(tmp_path), store(tmp_path, first=False)
    other.finetunes()
    one.create(MODEL, "ft")
    assert code_of(lambda: other.create(MODEL, "ft")) == code_of(lambda: one.create(MODEL, "ft"))
    assert [f.name for f in other.finetunes()] == ["ft"]


def test_a_second_process_does_not_clear_uploads_in_progress(tmp_path):
    one = store(tmp_path)
    with one.upload_file() as (_, path):
        store(tmp_path, first=False)
        assert path.exists()


# --- one batch runner -----------------------------------------------------------------------------


def test_a_front_end_that_does_not_run_items_leaves_the_runners_items_running(tmp_path):
    runner = BatchStore.open(tmp_path / "batch.sqlite3")
    assert runner.submit("job", MODEL, [NewItem('{"prompt": "Hi"}', "null")], now=0, max_jobs=10)
    claim = runner.claim()
    assert claim is not None
    SubmittingStore.open(tmp_path / "batch.sqlite3").close()
    assert [item.state for item in runner.item_states("job")] == ["running"]
    BatchStore.open(tmp_path / "batch.sqlite3").close()  # what a second runner would do
    assert [item.state for item in runner.item_states("job")] == ["queued"]
