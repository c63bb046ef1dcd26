"""What wai's engine layer takes from vLLM that a type check cannot see, checked against the vLLM that
`import vllm` finds: the installed 0.32 here, 0.26.0 when test_vllm_026.py runs this file with 0.26's
modules first on the path. (Names, attributes, keyword arguments and signatures are type-checked
against both: `make lint` and test_vllm_026.py.) Every wai module that uses vLLM imports; the engine
arguments every config makes (a dict, typed Any) are AsyncEngineArgs fields; the differences
server/engine/vllm_compat.py smooths over take the form this vLLM has."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import vllm
import vllm.exceptions
from vllm.config import ParallelConfig
from vllm.engine.arg_utils import AsyncEngineArgs

from server.config import load_settings
from server.engine import vllm_compat
from server.engine.engine_args import engine_arg_values, engine_args
from server.engine.types import UnsupportedVllm
from tests.unit.test_layers import imports

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# Set by test_vllm_026.py: the vLLM this run must be on. Otherwise the one pyproject.toml pins.
EXPECTED = "WAI_EXPECTED_VLLM"


def pinned_vllm() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {re.sub(r"^vllm(-cpu)?==", "", r) for deps in extras.values() for r in deps if re.match(r"vllm(-cpu)?==", r)}
    assert len(pins) == 1, pins
    return pins.pop()


def test_this_run_is_on_the_expected_vllm():
    assert vllm.__version__ == os.environ.get(EXPECTED, pinned_vllm())
    assert vllm_compat.VERSION == vllm.__version__


def modules_that_import_vllm() -> list[str]:
    """Read from the source, as the layer rules read it (at any depth of a module's code)."""
    graph = imports()
    return sorted(
        m for m, names in graph.items() if m.startswith("server") and any(n.split(".")[0] == "vllm" for n in names)
    )


@pytest.mark.parametrize("name", modules_that_import_vllm())
def test_module_that_uses_vllm_imports(name):
    importlib.import_module(name)


def all_options_model():
    """A model that sets every engine option wai maps, LoRA included."""
    settings = load_settings(ROOT / "configs" / "llama-3-tiny.yaml")
    model = settings.models[0]
    engine = model.engine.model_copy(update={"kv_cache_gib": 1.0, "gpu_memory_utilization": 0.5})
    engine = engine.model_copy(update={"enable_prefix_caching": True})
    return model.model_copy(update={"engine": engine, "lora": model.lora.model_copy(update={"enabled": True})})


def every_model():
    models = [model for path in CONFIGS for model in load_settings(path).models]
    return [*models, all_options_model()]


@pytest.mark.parametrize("model", every_model(), ids=lambda m: m.name)
def test_engine_arguments_are_fields_of_this_vllm(model):
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    values = engine_arg_values(model, "/nowhere")
    assert set(values) <= fields, f"not AsyncEngineArgs fields: {sorted(set(values) - fields)}"
    engine_args(model, "/nowhere")  # its __post_init__ checks run


def test_all_options_model_sets_every_option():
    keys = set(engine_arg_values(all_options_model(), "/nowhere"))
    assert {"kv_cache_memory_bytes", "gpu_memory_utilization", "enable_prefix_caching", "enable_lora"} <= keys


def test_the_errors_of_a_refused_request_are_caught_as_refusals():
    from server.engine.vllm_engine import REFUSALS

    refused = [vllm.exceptions.VLLMValidationError, vllm.exceptions.VLLMNotFoundError]
    refused += [vllm.exceptions.LoRAAdapterNotFoundError, vllm.exceptions.VLLMUnprocessableEntityError]
    assert all(issubclass(error, REFUSALS) for error in refused)
    assert all(isinstance(error, type) and issubclass(error, Exception) for error in vllm_compat.CLIENT_ERRORS)


def test_front_ends_get_their_own_pair_of_engine_sockets():
    config = SimpleNamespace(parallel_config=ParallelConfig())  # all that the sockets read
    sockets = vllm_compat.front_end_sockets(config, 2)
    try:
        pairs = [sockets.client_addresses(index) for index in range(2)]
        assert [p["input_address"] for p in pairs] == sockets.addresses.inputs
        assert [p["output_address"] for p in pairs] == sockets.addresses.outputs
        assert len(set(sockets.addresses.inputs + sockets.addresses.outputs)) == 4
        sockets.handed_over()
    finally:
        sockets.cleanup()
    files = [a.removeprefix("ipc://") for a in sockets.addresses.inputs + sockets.addresses.outputs]
    assert not any(os.path.exists(f) for f in files)


@pytest.mark.parametrize("form", ["tuple", "object"])
def test_engine_core_launch_in_either_form(monkeypatch, form):
    """0.26's launch_core_engines yields a tuple, 0.32's an object whose front ends are watched."""
    manager = object.__new__(vllm_compat.CoreEngineProcManager)
    launched = SimpleNamespace(engine_manager=manager, watched_frontend_processes=())

    @contextlib.contextmanager
    def launch_core_engines(config, executor, log_stats, addresses):
        yield (manager, None, addresses, None) if form == "tuple" else launched

    monkeypatch.setattr(vllm_compat, "launch_core_engines", launch_core_engines)
    monkeypatch.setattr(vllm_compat.Executor, "get_class", lambda config: None)
    front_ends = [SimpleNamespace(name="front end")]
    with vllm_compat.launch_engine_core(SimpleNamespace(), True, None, front_ends) as cores:
        assert cores is manager
    assert launched.watched_frontend_processes == (front_ends if form == "object" else ())


@pytest.mark.parametrize("version", ["0.26.0", "0.29.2", "0.32.0", "0.32.1.dev4+g1234"])
def test_supported_versions(version):
    vllm_compat.check_version(version)


@pytest.mark.parametrize("version", ["0.25.2", "0.33.0", "0.33.0rc1", "1.0.0", "dev"])
def test_other_versions_are_refused_with_the_range(version):
    with pytest.raises(
        UnsupportedVllm, match=rf"wai runs on vLLM 0\.26\.0 through 0\.32\.x, .* is {re.escape(version)}"
    ):
        vllm_compat.check_version(version)
