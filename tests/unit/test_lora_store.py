"""The adapter store's pure logic: which model takes fine-tunes, names, ids, leftovers on restart."""

from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import save_file

from server.config import ModelConfig
from server.errors import WaiError
from server.serving.lora import AdapterStore
from server.serving.lora_checks import BaseModelShapes, read_base_model_shapes

WITH_LORA = ModelConfig(
    name="@cf/test/with-lora", aliases=["with-lora-alias"], weights={"path": "/x"}, lora={"enabled": True}
)
WITHOUT_LORA = ModelConfig(name="@cf/test/without-lora", weights={"path": "/y"})
SHAPES = BaseModelShapes(model_type="llama", linear_weights={"model.layers.0.self_attn.q_proj": (8, 8)})


def store(root) -> AdapterStore:
    return AdapterStore(root, [WITH_LORA, WITHOUT_LORA], {WITH_LORA.name: SHAPES})


def code_of(call) -> tuple[int, int]:
    with pytest.raises(WaiError) as raised:
        call()
    return raised.value.status, raised.value.code


def test_lora_on_a_model_with_lora_off_is_405_5005(tmp_path):
    adapters = store(tmp_path)
    assert code_of(lambda: adapters.adapter_for(WITHOUT_LORA.name, "anything")) == (405, 5005)
    assert code_of(lambda: adapters.create(WITHOUT_LORA.name, "ft")) == (405, 5005)
    assert code_of(lambda: adapters.create("@cf/nobody", "ft")) == (400, 5007)


def test_a_finetune_belongs_to_the_canonical_model_and_works_through_its_aliases(tmp_path):
    adapters = store(tmp_path)
    finetune = adapters.create("with-lora-alias", "ft")
    assert finetune.model == WITH_LORA.name
    assert code_of(lambda: adapters.adapter_for("with-lora-alias", "ft")) == (400, 3039)  # no files yet


def test_engine_ids_are_never_reused_after_a_new_upload(tmp_path):
    adapters = store(tmp_path)
    finetune = adapters.create(WITH_LORA.name, "ft")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / finetune.id / name).write_text("{}")
    first = adapters.adapter_for(WITH_LORA.name, "ft")
    assert adapters.adapter_for(WITH_LORA.name, finetune.id) == first
    with adapters._locked():  # what a new upload of its files does
        adapters._write_metadata(replace(adapters.get("ft"), engine_id=adapters._next_engine_id()))
    second = adapters.adapter_for(WITH_LORA.name, "ft")
    assert second.engine_id > first.engine_id and second.key != first.key


def test_a_restart_clears_interrupted_uploads_and_keeps_finetunes(tmp_path):
    adapters = store(tmp_path)
    adapters.create(WITH_LORA.name, "kept")
    (tmp_path / ".uploads" / "half-written").write_bytes(b"x")
    restarted = store(tmp_path)
    assert [f.name for f in restarted.finetunes()] == ["kept"]
    assert not any((tmp_path / ".uploads").iterdir())


def test_base_shapes_come_from_the_checkpoint_headers(tmp_path):
    save_file(
        {
            "model.layers.0.mlp.down_proj.weight": np.zeros((4, 6), np.float32),
            "model.embed_tokens.weight": np.zeros((10, 4), np.float32),
            "model.norm.weight": np.zeros(4, np.float32),
        },
        tmp_path / "model.safetensors",
    )
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    shapes = read_base_model_shapes(tmp_path)
    assert shapes == BaseModelShapes("llama", {"model.layers.0.mlp.down_proj": (4, 6)})
    assert shapes.module_names == {"down_proj"}
