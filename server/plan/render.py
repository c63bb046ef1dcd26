"""`wai plan`'s text: the plan as a person reads it (`--json` prints the plan itself)."""

from __future__ import annotations

from typing import Any

from server.plan.data import GIB


def render(plan: dict[str, Any]) -> str:
    gpu = plan["gpu"]
    bandwidth = f", {gpu['bandwidth_tb_s']} TB/s" if gpu["bandwidth_tb_s"] else ""
    lines = [f"Config: {plan['config']}", f"GPU: {gpu['name']} ({gpu['memory_gib']:g} GB{bandwidth})"]
    lines.append(f"Sequences of {plan['prompt_tokens']} prompt + {plan['output_tokens']} output tokens")
    for m in plan["models"]:
        arch = m["architecture"]
        util = m["gpu_memory_utilization"]
        if util is None:
            kv_cache = "the config's kv_cache_gib"
        else:
            kv_cache = (
                f"vLLM's share ({util:g} of each GPU) less weights, LoRA slots and a "
                f"{m['reserve_gib_per_gpu']:g} GiB reserve per GPU (activations, CUDA graphs, context)"
            )
        lines += [
            "",
            f"{m['name']} on {m['gpus']} GPU(s)",
            f"  architecture       {arch['parameters'] / 1e9:.2f}B parameters, {arch['num_hidden_layers']} layers, "
            f"{arch['num_key_value_heads']} KV heads x {arch['head_dim']} (from {arch['source']})",
            f"  weights            {m['weights_gib']:.2f} GiB ({m['weights_dtype']})",
            f"  LoRA slots         {m['lora_slots_bytes'] / GIB:.2f} GiB",
            f"  KV cache per token {m['kv_bytes_per_token'] / 1024:g} KiB ({m['kv_cache_dtype']})",
            f"  KV cache           {m['kv_cache_gib']:.2f} GiB: {kv_cache}",
            f"  tokens that fit    {m['kv_cache_tokens']:,}",
            f"  concurrency        {m['concurrency']} sequences (KV cache holds {m['kv_concurrency']}, "
            f"max_num_seqs {m['max_num_seqs']}: {m['concurrency_bound']} binds)",
        ]
        est = m["estimate"]
        if est is None:
            lines.append("  decode ceiling     unknown: give a GPU by name for its memory bandwidth")
        else:
            lines += [
                f"  decode ceiling     ESTIMATE from {est['bandwidth_tb_per_s']:g} TB/s of memory bandwidth, "
                "an upper bound (no compute, prefill or communication):",
                f"                     {est['decode_tokens_per_s_batch1']:,.0f} tokens/s for one sequence alone; "
                f"{est['decode_tokens_per_s_aggregate']:,} tokens/s in all at {est['at_concurrency']} sequences "
                f"({est['decode_tokens_per_s_per_sequence']:,.0f} each)",
            ]
        for p in m["published"]:
            lines.append(f"  published          {p['output_tokens_per_s']:,.0f} output tokens/s: {p['source']}")
        if not m["published"]:
            lines.append("  published          no published vLLM figure for this model on this GPU in wai's table")
        lines += [f"  NOTE               {note}" for note in m["notes"]]
    return "\n".join(lines)
