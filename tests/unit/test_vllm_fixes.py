"""The fixes wai loads into vLLM's processes: found by vLLM as a plugin, applied only where vLLM has
the bug, and exact for every token that has an adapter (the real-engine check is
tests/integration/test_lora.py, base requests batched with both adapter slots in use)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
import vllm.lora.ops.torch_ops as torch_ops
import vllm.lora.punica_wrapper.punica_cpu as punica_cpu
from vllm.lora.ops.torch_ops import lora_ops

from server.engine import vllm_fixes

VLLM_OPS = {name: getattr(lora_ops, name) for name in vllm_fixes.GATHERING_OPS}


@pytest.fixture
def fixed(monkeypatch):
    """vLLM's ops with the fix applied, put back as they were after the test."""
    for module in (lora_ops, torch_ops, punica_cpu):
        for name, op in VLLM_OPS.items():
            monkeypatch.setattr(module, name, op)
    assert vllm_fixes.skip_tokens_without_adapter()
    return {name: getattr(punica_cpu, name) for name in vllm_fixes.GATHERING_OPS}


def test_vllm_finds_the_fixes_as_a_general_plugin():
    (plugin,) = [e for e in importlib.metadata.entry_points(group="vllm.general_plugins") if e.name == "wai-fixes"]
    assert plugin.load() is vllm_fixes.apply


def test_the_pinned_vllm_gives_tokens_without_adapter_the_last_slot():
    # The bug the fix is for; once vLLM fixes it, the fix stands down (next test) and this one says so.
    assert vllm_fixes.applies_last_slot_to_tokens_without_adapter(VLLM_OPS["bgmv_shrink"])


def test_the_fix_stands_down_where_vllm_has_no_bug(fixed):
    assert not vllm_fixes.skip_tokens_without_adapter()  # the ops in place no longer have it
    assert punica_cpu.bgmv_shrink is fixed["bgmv_shrink"]  # and were not wrapped twice


def slots_and_tokens(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two adapter slots (rank 4, hidden 8) and six tokens: without adapter, slot 0, slot 1."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(2, 1, 4, 8, generator=generator)
    tokens = torch.randn(6, 8, generator=generator)
    slots = torch.tensor([-1, 0, 1, -1, 1, 0])
    return weights, tokens, slots


def test_shrink_gives_tokens_without_adapter_zero_and_the_others_exactly_vllms(fixed):
    weights, tokens, slots = slots_and_tokens()
    ours, theirs = torch.full((6, 4), 7.0), torch.full((6, 4), 7.0)
    fixed["bgmv_shrink"](tokens, weights, ours, slots, 0.5)
    VLLM_OPS["bgmv_shrink"](tokens, weights, theirs, slots, 0.5)
    without = slots < 0
    assert torch.equal(ours[without], torch.zeros(2, 4))
    assert not torch.equal(theirs[without], torch.zeros(2, 4))  # vLLM's own: the last slot's adapter
    assert torch.equal(ours[~without], theirs[~without])


@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_leaves_tokens_without_adapter_as_they_were(fixed, add_inputs):
    generator = torch.Generator().manual_seed(1)
    weights = torch.randn(2, 1, 8, 4, generator=generator)  # expand: rank 4 -> hidden 8
    inputs = torch.randn(6, 4, generator=generator)
    slots = torch.tensor([-1, 0, 1, -1, 1, 0])
    ours, theirs = torch.ones(6, 8), torch.ones(6, 8)
    fixed["bgmv_expand"](inputs, weights, ours, slots, add_inputs)
    VLLM_OPS["bgmv_expand"](inputs, weights, theirs, slots, add_inputs)
    without = slots < 0
    assert torch.equal(ours[without], torch.ones(2, 8) if add_inputs else torch.zeros(2, 8))
    assert torch.equal(ours[~without], theirs[~without])


def test_expand_slice_writes_only_its_slice_and_nothing_for_tokens_without_adapter(fixed):
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(2, 1, 3, 4, generator=generator)
    inputs = torch.randn(6, 4, generator=generator)
    slots = torch.tensor([-1, 0, 1, -1, 1, 0])
    ours, theirs = torch.ones(6, 8), torch.ones(6, 8)
    fixed["bgmv_expand_slice"](inputs, weights, ours, slots, 2, 3, True)
    VLLM_OPS["bgmv_expand_slice"](inputs, weights, theirs, slots, 2, 3, True)
    assert torch.equal(ours[slots < 0], torch.ones(2, 8))
    assert torch.equal(ours[slots >= 0], theirs[slots >= 0])


def test_a_batch_where_every_token_has_an_adapter_goes_to_vllms_op_untouched(fixed):
    weights, tokens, _ = slots_and_tokens()
    slots = torch.tensor([0, 1, 1, 0, 0, 1])
    ours, theirs = torch.zeros(6, 4), torch.zeros(6, 4)
    fixed["bgmv_shrink"](tokens, weights, ours, slots, 1.0)
    VLLM_OPS["bgmv_shrink"](tokens, weights, theirs, slots, 1.0)
    assert torch.equal(ours, theirs)
