"""The catalog's entries, filters and paging, built from a config: pure logic."""

from __future__ import annotations

from server.config import ModelConfig
from server.protocol import catalog

SMOL = ModelConfig(
    name="@cf/huggingfacetb/smollm2-135m-instruct",
    aliases=["@cf/wai/small"],
    stands_in_for=["@cf/meta/llama-3-8b-instruct"],
    description="A small model.",
    weights={"recipe": "smollm2-135m-instruct"},
)
MINI = ModelConfig(
    name="@cf/sentence-transformers/all-minilm-l6-v2",
    task="text-embeddings",
    description="Vectors.",
    weights={"recipe": "all-minilm-l6-v2"},
    context_window=256,
)
ENTRIES = [catalog.Entry(name, SMOL) for name in SMOL.served_names] + [catalog.Entry(MINI.name, MINI)]


def names(**filters):
    page = catalog.search_page(ENTRIES, 1, 100, **{"search": None, "task": None, "author": None, **filters})
    return [item["name"] for item in page["result"]]


def test_every_name_is_its_own_entry_and_a_stand_in_says_so():
    items = {item["name"]: item for item in map(catalog.item, ENTRIES)}
    assert set(items) == {*SMOL.served_names, MINI.name}
    stand_in = items["@cf/meta/llama-3-8b-instruct"]
    assert stand_in["description"].startswith("Stand-in: this name is answered by @cf/huggingfacetb/")
    assert {"property_id": "served_by", "value": SMOL.name} in stand_in["properties"]
    assert "Another name for" in items["@cf/wai/small"]["description"]
    assert items[SMOL.name]["description"] == "A small model."
    assert items[MINI.name]["task"]["name"] == "Text Embeddings"
    assert len({item["id"] for item in items.values()}) == 4


def test_filters():
    assert names(task="text generation") == SMOL.served_names
    assert names(task=catalog.task_of(MINI)["id"]) == [MINI.name]
    assert names(author="META") == ["@cf/meta/llama-3-8b-instruct"]
    assert names(search="vectors") == [MINI.name]
    assert names(search="stand-in") == ["@cf/meta/llama-3-8b-instruct"]
    assert names(search="nothing like it") == []


def test_paging_ends_with_an_empty_page():
    pages = [catalog.search_page(ENTRIES, page, 3, search=None, task=None, author=None) for page in (1, 2, 3)]
    assert [len(p["result"]) for p in pages] == [3, 1, 0]
    assert pages[1]["result_info"] == {"page": 2, "per_page": 3, "count": 1, "total_count": 4}
