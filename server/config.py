"""Configuration: a YAML file of served models, with `WAI_*` environment overrides.

Precedence, highest first: explicit arguments, environment (`WAI_PORT`, `WAI_API_KEYS=a,b`,
`WAI_CACHE_DIR`, nested fields as `WAI_LIMITS__MAX_BODY_BYTES` or `WAI_METRICS__API_KEY`), the YAML
file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def default_cache_dir() -> Path:
    return Path(os.environ.get("WAI_CACHE_DIR") or Path.home() / ".cache" / "wai")


class Weights(BaseModel):
    """Where a model's checkpoint comes from: exactly one of `recipe` or `path`."""

    recipe: str | None = Field(None, description="a packaged model that `wai prepare` builds into the cache")
    path: str | None = Field(None, description="a local checkpoint folder or a Hugging Face repo id")

    @model_validator(mode="after")
    def _exactly_one(self) -> Weights:
        if (self.recipe is None) == (self.path is None):
            raise ValueError("weights needs exactly one of 'recipe' or 'path'")
        return self


class EngineConfig(BaseModel):
    """vLLM engine arguments. `extra` passes any other AsyncEngineArgs field through unchanged."""

    dtype: str = "auto"
    max_model_len: int | None = None
    # KV cache size in GiB. On CPU this is the cache itself; on GPU leave it unset and use
    # gpu_memory_utilization, vLLM's share of device memory for weights + activations + cache.
    kv_cache_gib: float | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int = 256
    enforce_eager: bool = False
    enable_prefix_caching: bool | None = None
    tensor_parallel_size: int = 1
    extra: dict[str, Any] = Field(default_factory=dict)


class Pricing(BaseModel):
    """What the model costs on the hosted Workers AI, per million tokens (docs/compatibility.md).

    Only for the `wai_workers_ai_cost_usd_total` and `wai_workers_ai_neurons_total` counters: what
    the tokens served here would have cost there.
    """

    usd_per_m_input_tokens: float = Field(ge=0)
    usd_per_m_output_tokens: float = Field(ge=0)
    neurons_per_m_input_tokens: float = Field(ge=0)
    neurons_per_m_output_tokens: float = Field(ge=0)
    # Prompt tokens the prefix cache served; None: the input price.
    usd_per_m_cached_input_tokens: float | None = Field(None, ge=0)
    neurons_per_m_cached_input_tokens: float | None = Field(None, ge=0)


class LoraConfig(BaseModel):
    """LoRA fine-tunes on one model: vLLM's batched multi-LoRA, plus the limits uploads must meet."""

    enabled: bool = False
    # vLLM sizes its LoRA buffers for this rank; it accepts only these values.
    max_rank: Literal[8, 16, 32, 64, 128, 256] = 32
    max_loras: int = Field(2, ge=1, description="adapters active in one batch")
    max_cpu_loras: int = Field(4, ge=1, description="adapters kept loaded; least recently used ones are evicted")
    max_upload_bytes: int = Field(300 * 1024 * 1024, ge=1024, description="per adapter file")

    @model_validator(mode="after")
    def _loaded_holds_active(self) -> LoraConfig:
        if self.max_cpu_loras < self.max_loras:
            raise ValueError("lora.max_cpu_loras must be at least lora.max_loras")
        return self


class QueueConfig(BaseModel):
    """Backpressure (serving/admission.py): beyond these, requests get 429 / 3040 at once."""

    max_waiting_requests: int | None = Field(None, ge=1, description="default: 2 x engine.max_num_seqs")
    max_waiting_prompt_tokens: int | None = Field(
        None, ge=1, description="prompt tokens of the waiting requests together; default: 1,024 per waiting request"
    )


class ModelConfig(BaseModel):
    name: str = Field(description="public name, as clients send it, e.g. @cf/meta/llama-3-8b-instruct")
    aliases: list[str] = Field(default_factory=list, description="other names for the same model")
    stands_in_for: list[str] = Field(
        default_factory=list,
        description="names of other models this one answers for; replies carry x-wai-stand-in",
    )
    task: Literal["text-generation", "text-embeddings"] = "text-generation"
    description: str = ""
    weights: Weights
    engine: EngineConfig = Field(default_factory=EngineConfig)
    context_window: int = Field(
        7968, ge=1, description="prompt tokens + max_tokens may not exceed it (embeddings: tokens per text)"
    )
    chat_template: str | None = Field(None, description="a Jinja file; default: the tokenizer's own")
    # Used when a request leaves them out, and published as the defaults of the model's schema.
    default_max_tokens: int = Field(256, ge=1)
    default_temperature: float = Field(0.6, ge=0, le=5, description="Workers AI's own for llama-3-8b-instruct")
    pricing: Pricing | None = Field(None, description="hosted prices, for the cost counters")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)

    @property
    def max_waiting_requests(self) -> int:
        return self.queue.max_waiting_requests or 2 * self.engine.max_num_seqs

    @property
    def max_waiting_prompt_tokens(self) -> int:
        return self.queue.max_waiting_prompt_tokens or 1024 * self.max_waiting_requests

    @property
    def served_names(self) -> list[str]:
        return [self.name, *self.aliases, *self.stands_in_for]


class Limits(BaseModel):
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    # A request still generating after this long ends with 408 / 3007 (clients may ask for less
    # with `X-Request-Timeout: <seconds>`).
    request_timeout_s: float = Field(600, gt=0)
    # On SIGTERM, how long requests in flight get to finish before they are cut short.
    drain_timeout_s: float = Field(30, ge=0)
    # The connection's own defences (server/api/connections.py, docs/security.md), as nginx's in front
    # of an app: a request's headers must arrive within this long of its first byte; its body may
    # pause no longer than this between two reads (a slow upload that keeps sending is never cut).
    header_timeout_s: float = Field(30, gt=0)
    body_timeout_s: float = Field(60, gt=0)
    keep_alive_timeout_s: float = Field(5, gt=0)  # an idle kept-alive connection closes after this
    max_header_bytes: int = Field(16 * 1024, ge=1024)  # larger request heads get 431
    # Open connections in all and from one client address; the excess gets 503 with Retry-After.
    # Behind a proxy every connection comes from the proxy's address: raise the second to the first.
    max_connections: int = Field(4096, ge=1)
    max_connections_per_client: int = Field(512, ge=1)


class TlsConfig(BaseModel):
    """HTTPS from wai itself, for a node that faces clients without an ingress in front."""

    certfile: Path | None = None  # PEM certificate chain
    keyfile: Path | None = None  # PEM private key

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsConfig:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("tls needs both certfile and keyfile, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.certfile is not None


class StreamingConfig(BaseModel):
    # Random-length `p` padding on each token event, against the token-length side channel.
    padding: bool = True
    padding_max_chars: int = Field(32, ge=1)


class MetricsConfig(BaseModel):
    # When set, GET /metrics needs `Authorization: Bearer <api_key>` (a key of its own, so that
    # a scraper never holds a key that can run models); or give its sha256 hex digest instead.
    api_key: str | None = None
    api_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    # A `metrics` object with the request's own timings on OpenAI answers and on a stream's usage chunk,
    # as vLLM's per-request metrics (server/records.py, RequestRecord.timings). Off: OpenAI's shape exactly.
    per_request: bool = False


class ResponsesConfig(BaseModel):
    """The Responses API's stored responses (`store: true`), kept in the batch jobs' SQLite file."""

    max_stored: int = Field(10_000, ge=1, description="the oldest past this many are dropped")
    retention_s: float = Field(30 * 86400, gt=0, description="kept this long (OpenAI: 30 days)")


class BatchConfig(BaseModel):
    """The async batch API (`queueRequest`): where jobs are kept and how much they may hold."""

    db_path: Path | None = Field(None, description="the SQLite file of jobs; default: <cache_dir>/batch.sqlite3")
    max_items_per_job: int = Field(500, ge=1)
    max_payload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="a job's requests, as JSON")
    max_jobs: int = Field(1000, ge=1, description="jobs kept at once, unfinished or with results not yet expired")
    result_retention_s: float = Field(24 * 3600, gt=0, description="how long a finished job's results are kept")
    concurrency: int = Field(4, ge=1, description="batch items on the engine at once; the rest wait in the store")


class ClusterConfig(BaseModel):
    """How replicas that share `database_url` and `redis_url` work together (docs/deploy.md, "Many replicas")."""

    # A batch item claimed by a replica stays its own this long without a renewal (renewed every
    # third of it while it runs); a replica that died leaves its items to the others once it ends.
    lease_s: float = Field(30, ge=1, description="a batch item's lease")
    # How often a replica reads the fine-tune registry: a delete elsewhere is seen within this long.
    finetune_sync_s: float = Field(2, gt=0)
    # Redis unreachable: `open` holds each key's limits in this replica alone (as without Redis: N
    # replicas let through up to N times a limit) until it returns; `closed` refuses the limited
    # keys' requests with 503 / 3048 meanwhile. Keys without limits never touch Redis.
    key_limits_without_redis: Literal["open", "closed"] = "open"
    # How long one call to a store may take before it counts as unreachable.
    store_timeout_s: float = Field(2, gt=0)


class GatewayConfig(BaseModel):
    """A gateway declared in the config file: served from the start, read-only through the gateways
    API (docs/compatibility.md, "AI Gateway"). The fields are Cloudflare's gateway settings."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+(?:-[a-z0-9_]+)*$")
    cache_ttl: int | None = Field(None, ge=0, description="seconds; 0 or none: answers are not cached")
    cache_invalidate_on_update: bool = False
    collect_logs: bool = True
    rate_limiting_interval: int | None = Field(None, ge=0, description="the window, in seconds")
    rate_limiting_limit: int | None = Field(None, ge=0, description="requests per window")
    rate_limiting_technique: Literal["fixed", "sliding"] | None = None
    retry_max_attempts: int | None = Field(None, ge=1, le=5)
    retry_delay: int | None = Field(None, ge=0, le=5000, description="milliseconds")
    retry_backoff: Literal["constant", "linear", "exponential"] | None = None
    log_management: int | None = Field(None, ge=10_000, le=10_000_000, description="logs kept at most")
    log_management_strategy: Literal["STOP_INSERTING", "DELETE_OLDEST"] | None = None


class GatewaysConfig(BaseModel):
    """The AI Gateway layer: its response cache and its logs (docs/compatibility.md, "AI Gateway")."""

    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=0, description="the in-process cache's bound; 0: no cache")
    max_cached_answer_bytes: int = Field(25 * 1024 * 1024, ge=1, description="larger answers are not cached")
    logs_max_per_gateway: int = Field(
        100_000, ge=1, description="a gateway's logs kept at most (its log_management lowers it)"
    )
    logs_retention_s: float = Field(30 * 86400, gt=0, description="logs older than this are dropped")
    max_logged_body_bytes: int = Field(
        1024 * 1024, ge=0, description="a request or response body longer than this is logged cut to it"
    )
    declared: list[GatewayConfig] = Field(default_factory=list)


Scope = Literal["models", "finetunes"]
ALL_SCOPES: list[Scope] = ["models", "finetunes"]


class KeyConfig(BaseModel):
    """An API key with settings of its own. Given as the key, or as its sha256 hex digest, so that the
    config file holds no secret (`printf %s "$KEY" | sha256sum`)."""

    name: str = Field(description="for the log; never the key")
    key: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    requests_per_minute: int | None = Field(None, ge=1, description="the hosted default is 300 for text generation")
    max_concurrent: int | None = Field(None, ge=1)
    scopes: list[Scope] = Field(
        default_factory=lambda: list(ALL_SCOPES),
        description="models: run, OpenAI, catalog and AI Gateway request endpoints;"
        " finetunes: the fine-tune API and the AI Gateway gateways and logs APIs",
    )

    @model_validator(mode="after")
    def _key_or_digest(self) -> KeyConfig:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"key {self.name!r} needs exactly one of 'key' or 'sha256'")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WAI_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    api_processes: int = Field(
        1,
        ge=1,
        description="front-end (HTTP) processes sharing each model's one engine, as vLLM's --api-server-count;"
        " 1 serves from the `wai serve` process itself (`wai serve --api-processes N`)",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    keys: list[KeyConfig] = Field(default_factory=list)  # keys with limits, digests or scopes
    cache_dir: Path = Field(default_factory=default_cache_dir)
    # Uploaded LoRA fine-tunes, one folder each; default: <cache_dir>/adapters.
    adapters_dir: Path | None = None
    limits: Limits = Field(default_factory=Limits)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    # Shared state for many replicas (docs/deploy.md, "Many replicas"): `postgresql://...` keeps batch
    # jobs, stored responses and the fine-tune registry with its files; `redis://...` counts the keys'
    # limits. Unset: the embedded SQLite file, the adapter folder and in-process counters.
    database_url: str | None = Field(None, pattern=r"^postgres(ql)?://")
    redis_url: str | None = Field(None, pattern=r"^rediss?://")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    gateways: GatewaysConfig = Field(default_factory=GatewaysConfig)
    # Put prompt and output text in the per-request log line. Off by default: prompts are user data.
    log_prompts: bool = False
    models: list[ModelConfig] = Field(default_factory=list)
    # Where the config file lives; relative paths in it (chat templates) resolve from here.
    config_dir: Path = Path(".")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def has_keys(self) -> bool:
        return bool(self.api_keys or self.keys)

    @property
    def adapter_store_dir(self) -> Path:
        return self.adapters_dir if self.adapters_dir is not None else self.cache_dir / "adapters"

    @property
    def batch_db_path(self) -> Path:
        return self.batch.db_path if self.batch.db_path is not None else self.cache_dir / "batch.sqlite3"

    @model_validator(mode="after")
    def _names_are_unique(self) -> Settings:
        seen: set[str] = set()
        for model in self.models:
            for name in model.served_names:
                if name in seen:
                    raise ValueError(f"model name {name!r} is served twice")
                seen.add(name)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = settings_cls.model_config.get("yaml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML config at `path` (if any), apply `WAI_*` env vars, then `overrides`."""
    if path is None:
        return Settings(**overrides)
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    return FromFile(**{"config_dir": path.parent, **overrides})
