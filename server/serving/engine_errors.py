"""The one place where engine failures become wai errors, for text and embeddings alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from server import errors
from server.engine.types import AdapterLoadFailed, Engine, EngineRejected, EngineUnavailable


def ensure_ready(engine: Engine) -> None:
    """503 / 3040 while the engine starts, and after it died or stopped."""
    if not engine.is_ready():
        raise errors.service_unavailable()


@contextmanager
def engine_errors() -> Iterator[None]:
    """Around every engine call: its failures in the client's terms."""
    try:
        yield
    except EngineUnavailable as exc:
        raise errors.service_unavailable() from exc
    except AdapterLoadFailed as exc:
        raise errors.finetune_failed_to_load(str(exc)) from exc
    except EngineRejected as exc:
        raise errors.bad_input(str(exc)) from exc
