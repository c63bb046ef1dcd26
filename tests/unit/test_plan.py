"""`wai plan` against arithmetic done by hand, written out as literal numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server import plan
from server.config import ModelConfig

ROOT = Path(__file__).resolve().parents[2]
LLAMA3_8B = plan.KNOWN_MODELS["meta-llama-3-8b-instruct"]

# Meta-Llama-3-8B: embeddings and lm_head 128,256 x 4,096 = 525,336,576 each; per layer q and o
# 4,096 x 4,096 = 16,777,216 each, k and v 4,096 x 1,024 = 4,194,304 each, MLP 3 x 4,096 x 14,336
# = 176,160,768, two norms of 4,096; 32 layers; a final norm.
#   linear: 32 x (2 x 16,777,216 + 2 x 4,194,304 + 176,160,768) = 6,979,321,856
#   other:  2 x 525,336,576 + 65 x 4,096                           = 1,050,939,392
PARAMETERS = 8_030_261_248
BF16_WEIGHTS = 16_060_522_496  # 2 bytes each
FP8_WEIGHTS = 9_081_200_640  # 6,979,321,856 x 1 + 1,050,939,392 x 2
KV_BF16 = 131_072  # 2 (K, V) x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB
KV_FP8 = 65_536  # the same at 1 byte = 64 KiB
LORA_SLOT = 167_772_160  # 32 layers x rank 32 x (8,192 + 2 x 5,120 + 8,192 + 2 x 18,432 + 18,432) x 2 bytes


def llama3(engine: dict | None = None, lora: dict | None = None) -> ModelConfig:
    return ModelConfig(
        name="@cf/meta/llama-3-8b-instruct",
        weights={"path": "/nowhere/Meta-Llama-3-8B-Instruct"},
        engine={"dtype": "bfloat16", "max_model_len": 8192, "gpu_memory_utilization": 0.9, **(engine or {})},
        lora=lora or {"enabled": True, "max_rank": 32, "max_loras": 4, "max_cpu_loras": 32},
    )


def test_llama3_8b_sizes():
    assert LLAMA3_8B.parameters == PARAMETERS
    assert LLAMA3_8B.lora_slot_bytes(32, 2) == LORA_SLOT == 160 * 2**20


def test_llama3_8b_on_one_h100():
    got = plan.plan_model(llama3(), LLAMA3_8B, plan.find_gpu("H100"), 1, 1000, 250)
    assert got["weights_bytes"] == BF16_WEIGHTS
    assert got["kv_bytes_per_token"] == KV_BF16
    assert got["lora_slots_bytes"] == 4 * LORA_SLOT
    # 0.9 x 80 GiB = 77,309,411,328; less weights, 4 LoRA slots and the 3 GiB reserve (3,221,225,472)
    assert got["kv_cache_bytes"] == 77_309_411_328 - BF16_WEIGHTS - 671_088_640 - 3_221_225_472 == 57_356_574_720
    assert got["kv_cache_tokens"] == 437_595  # 57,356,574,720 / 131,072 = 437,595.6
    assert got["kv_concurrency"] == 350  # 437,595 / (1,000 + 250)
    assert (got["concurrency"], got["concurrency_bound"]) == (256, "max_num_seqs")
    # 3.35e12 B/s / (16,060,522,496 weights + 131,072 x 1,125 mean context = 16,207,978,496 B)
    assert got["estimate"]["decode_tokens_per_s_batch1"] == pytest.approx(206.69, abs=0.05)
    # at 256 sequences: 3.35e12 / (16,060,522,496 + 256 x 147,456,000) = 62.257 tokens/s each
    assert got["estimate"]["decode_tokens_per_s_per_sequence"] == pytest.approx(62.257, abs=0.05)
    assert got["estimate"]["decode_tokens_per_s_aggregate"] == 15_938  # 256 x 62.257
    assert got["fits"] and not got["notes"]


def test_fp8_weights_and_kv_cache():
    model = llama3({"extra": {"quantization": "fp8_per_tensor", "kv_cache_dtype": "fp8"}})
    got = plan.plan_model(model, LLAMA3_8B, plan.find_gpu("H100"), 1, 1000, 250)
    assert (got["weights_dtype"], got["kv_cache_dtype"]) == ("fp8", "fp8")
    assert got["weights_bytes"] == FP8_WEIGHTS
    assert got["kv_bytes_per_token"] == KV_FP8
    # 77,309,411,328 - 9,081,200,640 - 671,088,640 - 3,221,225,472 = 64,335,896,576 = 981,687.9 x 64 KiB
    assert got["kv_cache_tokens"] == 981_687


def test_tensor_parallel_adds_memory_and_bandwidth():
    got = plan.plan_model(llama3(), LLAMA3_8B, plan.find_gpu("H100"), 2, 1000, 250)
    # 2 x 77,309,411,328 - 16,060,522,496 - 671,088,640 - 2 x 3,221,225,472 = 131,444,760,576
    assert got["kv_cache_bytes"] == 131_444_760_576
    assert got["kv_cache_tokens"] == 1_002_843  # / 131,072 = 1,002,843.3
    assert got["estimate"]["bandwidth_tb_per_s"] == 6.7
    assert got["estimate"]["decode_tokens_per_s_batch1"] == pytest.approx(413.38, abs=0.05)  # 6.7e12 / 16,207,978,496


def test_the_kv_cache_binds_when_max_num_seqs_is_larger():
    got = plan.plan_model(llama3({"max_num_seqs": 1024}), LLAMA3_8B, plan.find_gpu("H100"), 1, 1000, 250)
    assert (got["concurrency"], got["concurrency_bound"]) == (350, "kv_cache")


def test_a_fixed_kv_cache_size_wins_over_the_utilization():
    model = llama3({"kv_cache_gib": 4}, lora={"enabled": False})
    got = plan.plan_model(model, LLAMA3_8B, plan.find_gpu("L4"), 1, 1000, 250)
    assert got["kv_cache_tokens"] == 32_768  # 4 GiB / 128 KiB
    assert got["gpu_memory_utilization"] is None and got["lora_slots_bytes"] == 0


def test_a_gpu_too_small_is_said_so():
    got = plan.plan_model(llama3(), LLAMA3_8B, plan.find_gpu("16GB"), 1, 1000, 250)
    assert not got["fits"] and got["kv_cache_tokens"] == 0 and got["notes"]
    # 24 GB: 0.9 x 24 GiB = 23,192,823,398; less 16,060,522,496, 671,088,640 and 3,221,225,472
    # = 3,239,986,790 bytes = 24,719 tokens: 3 sequences of 8,000
    got = plan.plan_model(llama3(), LLAMA3_8B, plan.find_gpu("24GiB"), 1, 7000, 1000)
    assert got["fits"] and got["kv_cache_tokens"] == 24_719 and got["concurrency"] == 3
    assert got["estimate"] is None  # no bandwidth for a bare memory size


def test_gpus_by_name_alias_and_size():
    assert plan.find_gpu("h100-80gb") is plan.GPUS["H100"]
    assert plan.find_gpu("A100") is plan.GPUS["A100-80GB"]
    assert plan.find_gpu("H200").memory_gib == 141 and plan.find_gpu("H200").bandwidth_tb_s == 4.8
    assert plan.find_gpu("80GB").memory_gib == 80
    with pytest.raises(plan.PlanError, match="unknown GPU"):
        plan.find_gpu("B9000")


def test_architecture_read_from_a_local_checkpoint(tmp_path):
    folder = tmp_path / "Some-Llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B.hf_config()))
    model = ModelConfig(name="m", weights={"path": str(folder)})
    arch, source, known = plan.architecture_of(model, tmp_path)
    assert arch == LLAMA3_8B and source == f"{folder}/config.json" and known is None
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(plan.PlanError, match="no num_attention_heads"):
        plan.architecture_of(model, tmp_path)


def test_unknown_quantization_is_refused():
    with pytest.raises(plan.PlanError, match="awq"):
        plan.plan_model(llama3({"extra": {"quantization": "awq"}}), LLAMA3_8B, plan.GPUS["H100"], 1, 1000, 250)


def test_the_json_deploy_docs_quote(capsys):
    """`wai plan --config configs/llama-3-8b-instruct.yaml --gpu H100 --json`: the keys stay as they are."""
    assert plan.main(["--config", "configs/llama-3-8b-instruct.yaml", "--gpu", "H100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"config", "gpu", "prompt_tokens", "output_tokens", "models"}
    (model,) = out["models"]
    assert {
        "name",
        "gpus",
        "architecture",
        "weights_dtype",
        "kv_cache_dtype",
        "weights_bytes",
        "weights_gib",
        "lora_slots_bytes",
        "kv_bytes_per_token",
        "gpu_memory_utilization",
        "reserve_gib_per_gpu",
        "kv_cache_bytes",
        "kv_cache_gib",
        "kv_cache_tokens",
        "tokens_per_sequence",
        "kv_concurrency",
        "max_num_seqs",
        "concurrency",
        "concurrency_bound",
        "fits",
        "notes",
        "estimate",
        "published",
    } == set(model)
    assert model["kv_bytes_per_token"] == KV_BF16 and model["weights_bytes"] == BF16_WEIGHTS
    assert model["published"] and all("Lambda" in p["source"] for p in model["published"])


def test_text_output_labels_estimates_and_published_figures(capsys):
    assert plan.main(["--config", "configs/llama-3-8b-instruct.yaml", "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATE" in out and "published          8,088 output tokens/s" in out
    assert plan.main(["--config", "configs/llama-3-8b-instruct.yaml", "--gpu", "H200"]) == 0
    assert "no published vLLM figure" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(capsys):
    assert plan.main(["--config", "configs/llama-3-8b-instruct.yaml", "--gpu", "TPU"]) == 2
    assert "unknown GPU 'TPU'" in capsys.readouterr().err
    assert plan.main(["--config", "configs/nothing.yaml", "--gpu", "H100"]) == 2


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"vllm", "torch", "transformers", "rich", "fastapi", "uvicorn", "httpx"}:
            raise ImportError("not on a bare node: " + name)
sys.meta_path.insert(0, Block())
from server.plan import main
sys.exit(main(sys.argv[1:]))
"""


def test_runs_with_only_the_config_dependencies():
    """On a bare GPU node, before vLLM or torch are installed: `python -m server.plan`."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, "--config", "configs/llama-3-8b-instruct-tp2.yaml", "--gpu", "H100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "on 2 GPU(s)" in result.stdout
