"""The model catalog as the Workers AI API publishes it (docs/compatibility.md, section 7), from the config.

Every public name is its own entry: a model's name, each alias, each name it stands in for. An entry
that is a stand-in says so in its description and in a `stand_in_for` property, so no client can
mistake the small default model for the one it answers for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from server.config import ModelConfig

_IDS = uuid.UUID("5b0c2f55-0f7e-4d57-9a53-2f4a3c8e9d10")  # namespace of wai's stable catalog ids

TASKS = {
    "text-generation": {
        "name": "Text Generation",
        "description": "Family of generative text models, such as large language models (LLM), that can be "
        "adapted for a variety of natural language tasks.",
    },
    "text-embeddings": {
        "name": "Text Embeddings",
        "description": "Feature extraction models transform raw data into numerical features that can be "
        "processed while preserving the information in the original dataset.",
    },
}


@dataclass(frozen=True)
class Entry:
    """One public name and the configured model that answers it."""

    name: str
    model: ModelConfig

    @property
    def stands_in(self) -> bool:
        return self.name in self.model.stands_in_for

    @property
    def is_alias(self) -> bool:
        return self.name in self.model.aliases

    @property
    def author(self) -> str:
        # "@cf/meta/llama-3-8b-instruct" -> "meta"
        parts = self.name.split("/")
        return parts[1] if len(parts) >= 3 else ""


def stable_id(name: str) -> str:
    return str(uuid.uuid5(_IDS, name))


def task_of(model: ModelConfig) -> dict[str, str]:
    return {"id": stable_id(model.task), **TASKS[model.task]}


def description(entry: Entry) -> str:
    own = entry.model.description
    if entry.stands_in:
        return f"Stand-in: this name is answered by {entry.model.name}, not by {entry.name}. {own}".strip()
    if entry.is_alias:
        return f"Another name for {entry.model.name}. {own}".strip()
    return own


def item(entry: Entry) -> dict[str, Any]:
    properties = [{"property_id": "context_window", "value": str(entry.model.context_window)}]
    if entry.model.lora.enabled:  # as the hosted catalog marks models that take fine-tunes
        properties.append({"property_id": "lora", "value": "true"})
    if entry.stands_in:
        properties.append({"property_id": "stand_in_for", "value": entry.name})
        properties.append({"property_id": "served_by", "value": entry.model.name})
    if entry.is_alias:
        properties.append({"property_id": "alias_of", "value": entry.model.name})
    return {
        "id": stable_id(entry.name),
        "name": entry.name,
        "description": description(entry),
        "task": task_of(entry.model),
        "tags": [],
        "properties": properties,
    }


def matches(entry: Entry, search: str | None, task: str | None, author: str | None) -> bool:
    """The search endpoint's filters, all case-insensitive: `search` in the name or description,
    `task` by name ("Text Generation") or id, `author` as the name's second part ("meta")."""
    if search and search.lower() not in f"{entry.name}\n{description(entry)}".lower():
        return False
    if task and task.lower() not in {TASKS[entry.model.task]["name"].lower(), stable_id(entry.model.task)}:
        return False
    return not author or author.lower() == entry.author.lower()


# Paging of the catalog search, as Cloudflare's: pages from 1, 50 items a page by default, at most 1,000.
FIRST_PAGE = 1
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 1000


def search_page(entries: list[Entry], page: int, per_page: int, **filters: str | None) -> dict[str, Any]:
    """One page of matching items, with Cloudflare's `result_info`."""
    found = [item(entry) for entry in entries if matches(entry, **filters)]
    start = (page - 1) * per_page
    items = found[start : start + per_page]
    return {
        "result": items,
        "success": True,
        "errors": [],
        "messages": [],
        "result_info": {"page": page, "per_page": per_page, "count": len(items), "total_count": len(found)},
    }
