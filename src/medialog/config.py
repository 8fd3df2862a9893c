"""The one settings object, built from the environment (``MEDIALOG_*``).

Nothing else in medialog reads ``os.environ``. Every field is documented in README.md
(section "Configuration") with its default; ``tests/unit/test_config_docs.py`` keeps the two
in step, and ``tests/unit/test_compose.py`` checks docker-compose.yml uses only these names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["api", "actors", "workers", "projections", "analytics"]
ALL_ROLES: tuple[Role, ...] = ("api", "actors", "workers", "projections", "analytics")
CLICKHOUSE_ROLES: frozenset[Role] = frozenset({"api", "analytics"})  # the roles that open it


class Settings(BaseSettings):
    """Frozen configuration. ``Settings.from_env()`` is the only constructor used by code."""

    model_config = SettingsConfigDict(env_prefix="MEDIALOG_", frozen=True, extra="ignore")

    # -- process -----------------------------------------------------------------------------
    data_dir: Path = Path(".medialog")
    cache_dir: Path = Path("~/.cache/medialog")  # downloads kept across data dirs (Kafka's jars)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per line
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    public_url: str = ""  # base URL clients use to reach the api; default http://api_host:api_port
    shutdown_timeout_s: float = Field(default=20.0, gt=0)  # SIGTERM: drain this long, then exit

    # -- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    kafka_rebalance_timeout_ms: int = 10_000
    kafka_request_timeout_ms: int = 30_000
    kafka_linger_ms: int = Field(default=10, ge=0, le=1_000)
    consumer_group: str = "medialog"

    # -- PostgreSQL / ClickHouse ----------------------------------------------------------------
    postgres_dsn: SecretStr = SecretStr("postgresql://medialog@127.0.0.1:5432/medialog")
    postgres_pool_max: int = Field(default=10, ge=1)
    postgres_timeout_s: float = Field(default=10.0, gt=0)  # connect, pooled wait, each statement
    # http(s)://… or chdb:///path; default chDB in data_dir
    clickhouse_url: SecretStr = SecretStr("")

    # -- S3 ----------------------------------------------------------------------------------
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_public_endpoint: str = ""  # endpoint written into presigned URLs; default s3_endpoint
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    bucket_staging: str = "staging"
    bucket_masters: str = "masters"
    bucket_previews: str = "previews"

    # -- uploads -----------------------------------------------------------------------------
    upload_max_bytes: int = Field(default=5 * 1024**3, ge=1)
    upload_url_ttl_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    upload_grace_s: int = Field(default=600, ge=0)  # completion still accepted this long after
    expiry_sweep_interval_s: float = Field(default=60.0, gt=0)  # workers: expire stale uploads

    # -- authentication (JWT) ------------------------------------------------------------------
    jwt_issuer: str = "medialog"
    jwt_audience: str = "medialog-api"
    jwt_algorithms: str = "RS256"  # comma-separated allow-list, subset of RS256,HS256
    jwt_hs256_secret: SecretStr = SecretStr("")
    jwt_jwks_url: str = ""
    jwt_jwks_cache_s: int = 300
    jwt_leeway_s: int = 30
    jwt_private_key_file: Path | None = None  # set: medialog is its own issuer (serves JWKS)

    # -- signed streaming URLs ---------------------------------------------------------------
    signing_keys: SecretStr = SecretStr("")  # "kid:secret[,kid:secret…]"; the first signs

    # -- browsers and proxies (api; ``medialog dev`` also sets the buckets' CORS) --------------
    cors_origins: str = ""  # "https://app.example[,…]": origins browsers may call from
    trusted_proxies: str = ""  # IPs/CIDRs whose Forwarded / X-Forwarded-For is believed

    # -- engagement ----------------------------------------------------------------------------
    viewer_salt: SecretStr = SecretStr("")  # names anonymous viewers; required by the api role
    view_threshold_s: float = Field(default=10.0, gt=0)  # watch time that makes a view
    view_window_s: int = Field(default=3600, ge=1)  # a session's view counts once per window
    view_sessions_keep_s: int = Field(default=86400, ge=0)  # kept this long after its window

    # -- ffmpeg ------------------------------------------------------------------------------
    ffmpeg_bin: str = "ffmpeg"
    ffprobe_bin: str = "ffprobe"

    # -- transcoding (workers) -----------------------------------------------------------------
    transcode_concurrency: int = Field(default=1, ge=1)  # jobs (and ffmpeg processes) at once
    transcode_timeout_s: float = Field(default=1800.0, gt=0)  # per ffmpeg/ffprobe process
    transcode_max_attempts: int = Field(default=3, ge=1)  # then dead letter + asset failed
    transcode_backoff_s: float = Field(default=1.0, ge=0)  # retry n waits base * 2**(n-1)
    transcode_backoff_max_s: float = Field(default=300.0, ge=0)  # cap of one retry's wait

    # -- playback ------------------------------------------------------------------------------
    playback_ttl_s: int = Field(default=3600, ge=60)  # signed URL lifetime when not asked
    playback_ttl_max_s: int = Field(default=86400, ge=60)  # longest expires_in accepted

    # -- rate limits (api; ``limits`` notation, e.g. "100/day"; empty: unlimited) ------------
    rate_limit_storage: str = "memory://"  # per process; async+redis://host:6379 shares them
    rate_limit_uploads: str = "100/day"  # POST /v1/uploads, per caller
    rate_limit_views: str = "600/minute"  # POST /v1/assets/{id}/views, per caller
    rate_limit_view_sessions: str = "60/minute"  # view reports per viewer, asset and session
    rate_limit_writes: str = "600/minute"  # every other POST/PUT/PATCH/DELETE, per caller
    rate_limit_reads: str = "1200/minute"  # GET/HEAD, per caller

    @field_validator("jwt_private_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("rate_limit_uploads", "rate_limit_views", "rate_limit_writes",
                     "rate_limit_reads", "rate_limit_view_sessions")
    @classmethod
    def _one_rate_limit(cls, value: str) -> str:
        if value.strip():
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"not a rate limit such as 100/day: {value!r}") from None
            if any(sep in value for sep in ",;|"):
                raise ValueError(f"one rate limit per route class, got {value!r}")
        return value.strip()

    @field_validator("rate_limit_storage")
    @classmethod
    def _async_storage(cls, value: str) -> str:
        if value != "memory://" and not value.startswith("async+"):
            raise ValueError(f"rate_limit_storage is memory:// or async+…://, got {value!r}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        """Each an exact origin, ``scheme://host[:port]`` (lower-cased, no path): browsers send
        it so, and ``*`` or a pattern would hand the api to any page."""
        origins = []
        for entry in (e.strip().rstrip("/").lower() for e in value.split(",")):
            if not entry:
                continue
            parts = urlsplit(entry)
            if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path
                    or parts.query or parts.fragment or "@" in parts.netloc):
                raise ValueError(f"cors_origins: not an origin such as https://app.example: "
                                 f"{entry!r}")
            origins.append(entry)
        return ",".join(origins)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        networks = []
        for entry in (e.strip() for e in value.split(",")):
            if entry:
                try:
                    networks.append(str(ipaddress.ip_network(entry, strict=False)))
                except ValueError:
                    raise ValueError(f"trusted_proxies: not an IP or CIDR: {entry!r}") from None
        return ",".join(networks)

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: str) -> str:
        algs = {a.strip() for a in value.split(",") if a.strip()}
        unknown = algs - {"RS256", "HS256"}
        if not algs or unknown:
            raise ValueError(f"jwt_algorithms must be a subset of RS256,HS256, got {value!r}")
        return ",".join(sorted(algs))

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read ``MEDIALOG_*`` variables; ``overrides`` win (used by ``medialog dev``)."""
        return cls(**overrides)  # type: ignore[arg-type]

    def consumer_group_of(self, roles: Iterable[Role]) -> str:
        """The Faust application id (consumer group) of a process running ``roles``. Kafka gives
        each partition of a group to one member only, so processes with different agents on one
        topic must not share a group, while processes running the same roles do (they share the
        partitions). Projections have a group each (``projections.reader.group_of``).
        Every consuming role in one process (``run --roles all``): ``consumer_group``. Faust names
        topics after it, so it keeps to Kafka's topic characters (roles joined with ``-``)."""
        consuming = sorted(set(roles) - {"api"})
        if len(consuming) == len(ALL_ROLES) - 1:
            return self.consumer_group
        return f"{self.consumer_group}.{'-'.join(consuming)}"

    def as_env(self) -> dict[str, str]:
        """These settings as ``MEDIALOG_*`` variables: what a child process needs to build the
        same settings with :meth:`from_env`. Holds the secrets: hand it to a process, never log
        it."""
        env = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"MEDIALOG_{name.upper()}"] = "" if value is None else str(value)
        return env

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def allowed_algorithms(self) -> frozenset[str]:
        return frozenset(self.jwt_algorithms.split(","))

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url.get_secret_value() or f"chdb://{self.data_dir.resolve()}/chdb"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def work_dir(self) -> Path:
        """Scratch space of the transcoder (one directory per job, removed when it ends)."""
        return self.data_dir / "work"

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return tuple(self.cors_origins.split(",")) if self.cors_origins else ()

    @property
    def presign_endpoint(self) -> str:
        return self.s3_public_endpoint or self.s3_endpoint
