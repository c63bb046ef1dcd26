"""Fixes to vLLM that run inside its own processes (engine core, workers).

wai's code does not otherwise reach there. vLLM loads this module as a general plugin (the
`vllm.general_plugins` entry point in pyproject.toml) in every process it starts. Each fix first checks
that the installed vLLM still has the bug, and changes nothing where it does not.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("wai.engine")

# vLLM's PyTorch LoRA ops, which its CPU engine runs: the ones that gather each token's adapter weights.
GATHERING_OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def apply() -> None:
    """The plugin's entry point: every fix this vLLM needs."""
    skip_tokens_without_adapter()


def skip_tokens_without_adapter() -> bool:
    """A request without a fine-tune marks its tokens with adapter slot -1, which vLLM's GPU kernels
    skip, but its PyTorch ops (the CPU engine's) index the slots with it, and -1 is the last slot: a
    base-model request batched with fine-tune requests got the fine-tune in the last slot applied
    (vLLM pull request 48421, open at 0.32.0). Wrapped, such tokens enter the ops as zeros, so their
    adapter delta is zero. Whether it was needed."""
    try:
        from vllm.lora.ops.torch_ops import lora_ops
    except ImportError:  # no LoRA ops in this vLLM
        return False
    if not applies_last_slot_to_tokens_without_adapter(lora_ops.bgmv_shrink):
        return False
    import vllm.lora.ops.torch_ops as torch_ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    for name in GATHERING_OPS:
        fixed = skipping_tokens_without_adapter(getattr(lora_ops, name))
        # sgmv_* find them in lora_ops; the CPU wrapper and the package imported them by name.
        for module in (lora_ops, torch_ops, punica_cpu):
            setattr(module, name, fixed)
    log.info("vLLM's CPU LoRA ops now skip the tokens of requests without a fine-tune")
    return True


def applies_last_slot_to_tokens_without_adapter(bgmv_shrink: Callable[..., Any]) -> bool:
    """Whether this shrink op gives a token of slot -1 the last slot's adapter (a nonzero output)."""
    import torch

    inputs = torch.ones(1, 2)
    slots = torch.stack([torch.zeros(1, 2), torch.ones(1, 2)])  # slot 0 empty, slot 1 an adapter
    output = torch.zeros(1, 1)
    bgmv_shrink(inputs, slots, output, torch.tensor([-1]), 1.0)
    return bool(output.abs().sum() > 0)


def skipping_tokens_without_adapter(op: Callable[..., Any]) -> Callable[..., Any]:
    """`op(inputs, weights, output, slot_of_each_token, ...)` with the rows of the tokens of slot -1 set
    to zero in its inputs and their slot made 0, so that what the op writes or adds for them is zero."""

    @functools.wraps(op)
    def fixed(inputs: Any, weights: Any, output: Any, slots: Any, *args: Any, **kwargs: Any) -> Any:
        without = slots < 0
        if inputs.shape[0] != slots.shape[0] or not bool(without.any()):
            return op(inputs, weights, output, slots, *args, **kwargs)
        inputs = inputs.masked_fill(without.view(-1, *[1] * (inputs.dim() - 1)), 0)
        return op(inputs, weights, output, slots.clamp(min=0), *args, **kwargs)

    return fixed
