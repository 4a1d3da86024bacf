"""Configuration: the one place that reads the environment.

`load_settings()` reads the environment (and an optional `.env`), applies the rules for the
environment we run in, and either returns a ready `Settings` or raises `ConfigError` carrying
*every* problem found, so that an operator fixes them all in one deploy instead of one per crash.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32
# Values copied from tutorials and templates: never acceptable as a production secret.
_PLACEHOLDER_SECRETS = {
    "changeme",
    "change-me",
    "changethis",
    "secret",
    "secret-key",
    "your-secret-key",
    "your-secret-key-here",
    "your-jwt-secret-here",
    "supersecret",
    "development",
    "dev",
    "test",
}
_SECRET_HELP = (
    'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


@dataclass(frozen=True)
class ConfigProblem:
    variable: str
    message: str

    def __str__(self) -> str:
        return f"{self.variable}: {self.message}"


class ConfigError(Exception):
    """Raised with every configuration problem at once."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"A3E cannot start: {count} configuration {noun}."]
        lines += [f"  - {problem}" for problem in self.problems]
        lines.append("Fix these variables (environment or .env) and start again; `a3e doctor` checks them all.")
        return "\n".join(lines)


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string; ignore blanks."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"looks like a JSON list but is not valid JSON ({exc.msg})") from None
        else:
            value = text.split(",")
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value if str(item).strip()]
    return value


def normalize_origin(origin: str) -> str:
    """`HTTPS://App.Example.edu/` -> `https://app.example.edu`; raises ValueError if not an origin."""
    origin = origin.strip().rstrip("/")
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{origin!r} is not an origin; write it as https://host[:port]")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{origin!r} has a path, query or credentials; an origin is only https://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{origin!r} has an invalid port") from None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


SUPPORTED_DATABASES = "postgresql://… (or postgres://, postgresql+psycopg://) or sqlite:///path/to/file.db"
# The port as SQLAlchemy's URL parser finds it: after the first '@' of the credentials, if any.
_POSTGRES_PORT = re.compile(r"(?:[^:/]*(?::[^@]*)?@)?(?:\[[^/?]+\]|[^/:?]*)(?::(?P<port>[^/?]*))?")


def normalize_database_url(url: str) -> str:
    """Pick our driver for whatever spelling the platform hands us."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"is not a URL; use {SUPPORTED_DATABASES}")
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+psycopg3"):
        if not rest or rest.startswith("/") and len(rest) <= 1:
            raise ValueError("has no host or database name")
        match = _POSTGRES_PORT.match(rest)
        port = match.group("port") if match else None
        if port is not None and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
            # Never echo the URL: it holds the password.
            raise ValueError(
                "has an invalid port (a number from 1 to 65535 is required); "
                "write it as postgresql://user:password@host:5432/dbname"
            )
        return f"postgresql+psycopg://{rest}"
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if rest and not rest.startswith("/"):
            raise ValueError(
                "is not a valid SQLite URL; write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return f"sqlite://{rest}"
    raise ValueError(f"uses the unsupported scheme '{scheme}'; use {SUPPORTED_DATABASES}")


def mask_database_url(url: str) -> str:
    """The URL with its password replaced, for logs and reports."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


SUPPORTED_REDIS = "redis://[:password@]host[:port][/db], rediss://… (TLS) or unix:///path/to/redis.sock"


def normalize_redis_url(url: str) -> str:
    """A Redis URL that redis-py accepts, or ValueError saying why (never echoing the password)."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"is not a Redis URL; use {SUPPORTED_REDIS}")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ValueError("names no socket path; write unix:///path/to/redis.sock")
        return f"unix://{rest}"
    parts = urlsplit(f"{scheme}://{rest}")
    if not parts.hostname:
        raise ValueError(f"has no host; use {SUPPORTED_REDIS}")
    try:
        parts.port
    except ValueError:
        raise ValueError("has an invalid port (a number from 1 to 65535 is required)") from None
    database = parts.path.strip("/")
    if database and not re.fullmatch(r"[0-9]{1,5}", database):
        raise ValueError("has an invalid database number after the host (e.g. redis://host:6379/0)")
    return f"{scheme}://{rest}"


def secret_weakness(value: str) -> str | None:
    """Why a secret is too weak for production, or None."""
    if value.strip().lower() in _PLACEHOLDER_SECRETS or "change" in value.lower() and len(value) < 48:
        return "is a placeholder value"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is too short ({len(value)} characters; at least {MIN_SECRET_LENGTH} are required)"
    if len(set(value)) < 10:
        return "is too repetitive to be random"
    return None


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _alias(*names: str) -> Any:
    return Field(validation_alias=AliasChoices(*names))


class Settings(BaseSettings):
    """Every setting A³E reads, with the environment variable that sets it."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
        populate_by_name=True,
        frozen=True,
    )

    environment_name: str | None = Field(None, validation_alias=AliasChoices("ENVIRONMENT"))
    # Set by hosting platforms; when ENVIRONMENT is unset they mean "this is a deployment".
    railway_environment: str | None = Field(
        None, validation_alias=AliasChoices("RAILWAY_ENVIRONMENT_NAME", "RAILWAY_ENVIRONMENT")
    )
    render: str | None = Field(None, validation_alias=AliasChoices("RENDER"))
    fly_app_name: str | None = Field(None, validation_alias=AliasChoices("FLY_APP_NAME"))
    heroku_dyno: str | None = Field(None, validation_alias=AliasChoices("DYNO"))

    # Holds the database password: kept out of repr() like the SecretStr fields.
    database_url: str | None = Field(None, repr=False, validation_alias=AliasChoices("DATABASE_URL"))
    db_connect_timeout: float = Field(3.0, gt=0, le=60, validation_alias=AliasChoices("A3E_DB_CONNECT_TIMEOUT"))
    auto_migrate: bool | None = Field(None, validation_alias=AliasChoices("A3E_AUTO_MIGRATE"))
    allow_sqlite_in_production: bool = Field(
        False, validation_alias=AliasChoices("A3E_ALLOW_SQLITE_IN_PRODUCTION")
    )

    secret_key: SecretStr | None = Field(None, validation_alias=AliasChoices("SECRET_KEY"))
    jwt_secret_key: SecretStr | None = Field(None, validation_alias=AliasChoices("JWT_SECRET_KEY"))

    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("CORS_ORIGINS")
    )

    host: str = Field("0.0.0.0", validation_alias=AliasChoices("A3E_HOST"))
    port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("PORT"))
    workers: int = Field(1, ge=1, le=64, validation_alias=AliasChoices("WEB_CONCURRENCY", "A3E_WORKERS"))

    data_dir: Path = Field(Path("data"), validation_alias=AliasChoices("A3E_DATA_DIR"))
    disabled_features: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("A3E_DISABLED_FEATURES")
    )

    max_body_kb: int = Field(1024, ge=1, le=1024 * 1024, validation_alias=AliasChoices("A3E_MAX_BODY_KB"))
    max_upload_mb: int = Field(50, ge=1, le=10 * 1024, validation_alias=AliasChoices("A3E_MAX_UPLOAD_MB"))

    # ---- accounts ------------------------------------------------------------------------
    access_token_minutes: int = Field(15, ge=1, le=24 * 60, validation_alias=AliasChoices("A3E_ACCESS_TOKEN_MINUTES"))
    refresh_token_days: int = Field(30, ge=1, le=365, validation_alias=AliasChoices("A3E_REFRESH_TOKEN_DAYS"))
    # argon2id cost; changing it rehashes each password at its owner's next login.
    argon2_time_cost: int = Field(3, ge=1, le=20, validation_alias=AliasChoices("A3E_ARGON2_TIME_COST"))
    argon2_memory_kib: int = Field(
        65536, ge=1024, le=4 * 1024 * 1024, validation_alias=AliasChoices("A3E_ARGON2_MEMORY_KIB")
    )
    argon2_parallelism: int = Field(4, ge=1, le=64, validation_alias=AliasChoices("A3E_ARGON2_PARALLELISM"))
    # Failed logins: per account and client address, per client address, in a sliding window.
    login_max_failures: int = Field(5, ge=1, le=1000, validation_alias=AliasChoices("A3E_LOGIN_MAX_FAILURES"))
    login_max_failures_per_ip: int = Field(
        50, ge=1, le=100000, validation_alias=AliasChoices("A3E_LOGIN_MAX_FAILURES_PER_IP")
    )
    login_window_seconds: int = Field(900, ge=10, le=86400, validation_alias=AliasChoices("A3E_LOGIN_WINDOW_SECONDS"))
    # Proxies whose X-Forwarded-For is believed (addresses or networks); others' is ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("A3E_TRUSTED_PROXIES")
    )
    # Where people open A³E: links in emails (invitations, password reset) point here.
    app_url: str = Field("http://localhost:8000", validation_alias=AliasChoices("A3E_APP_URL"))

    # ---- email -------------------------------------------------------------------------------
    smtp_host: str | None = Field(None, validation_alias=AliasChoices("SMTP_HOST"))
    smtp_port: int = Field(587, ge=1, le=65535, validation_alias=AliasChoices("SMTP_PORT"))
    smtp_username: str | None = Field(None, validation_alias=AliasChoices("SMTP_USERNAME"))
    smtp_password: SecretStr | None = Field(None, validation_alias=AliasChoices("SMTP_PASSWORD"))
    smtp_security: Literal["starttls", "ssl", "none"] = Field("starttls", validation_alias=AliasChoices("SMTP_SECURITY"))
    smtp_timeout: float = Field(10.0, gt=0, le=120, validation_alias=AliasChoices("SMTP_TIMEOUT"))
    email_from: str = Field("A3E <no-reply@localhost>", validation_alias=AliasChoices("EMAIL_FROM"))

    # ---- document storage ------------------------------------------------------------------
    # local: files under $A3E_DATA_DIR/blobs; s3: any S3-compatible service (AWS, MinIO, R2, …).
    storage: Literal["local", "s3"] = Field("local", validation_alias=AliasChoices("A3E_STORAGE"))
    s3_bucket: str | None = Field(None, validation_alias=AliasChoices("A3E_S3_BUCKET"))
    s3_endpoint_url: str | None = Field(None, validation_alias=AliasChoices("A3E_S3_ENDPOINT_URL"))
    s3_region: str = Field("us-east-1", validation_alias=AliasChoices("A3E_S3_REGION"))
    s3_prefix: str = Field("", validation_alias=AliasChoices("A3E_S3_PREFIX"))
    s3_access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("A3E_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("A3E_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", validation_alias=AliasChoices("A3E_S3_ADDRESSING_STYLE")
    )
    s3_connect_timeout: float = Field(5.0, gt=0, le=60, validation_alias=AliasChoices("A3E_S3_CONNECT_TIMEOUT"))
    s3_read_timeout: float = Field(60.0, gt=0, le=600, validation_alias=AliasChoices("A3E_S3_READ_TIMEOUT"))
    s3_max_attempts: int = Field(3, ge=1, le=10, validation_alias=AliasChoices("A3E_S3_MAX_ATTEMPTS"))
    # ---- outgoing webhooks ---------------------------------------------------------------------
    # Deliveries to loopback, private, link-local or otherwise non-public addresses are refused
    # unless this is true (tests, on-premises receivers on the campus network).
    webhooks_allow_private: bool = Field(False, validation_alias=AliasChoices("A3E_WEBHOOKS_ALLOW_PRIVATE"))
    # Plain http:// endpoints: allowed by default only outside production.
    webhooks_allow_http: bool | None = Field(None, validation_alias=AliasChoices("A3E_WEBHOOKS_ALLOW_HTTP"))
    webhooks_connect_timeout: float = Field(
        3.0, gt=0, le=60, validation_alias=AliasChoices("A3E_WEBHOOKS_CONNECT_TIMEOUT")
    )
    webhooks_timeout: float = Field(10.0, gt=0, le=120, validation_alias=AliasChoices("A3E_WEBHOOKS_TIMEOUT"))
    # PEM certificates of extra authorities to trust for https:// receivers (a campus's own CA).
    webhooks_ca_bundle: Path | None = Field(None, validation_alias=AliasChoices("A3E_WEBHOOKS_CA_BUNDLE"))
    # Seconds to wait before each retry (the last one repeats: the cap); jitter of ±20 % is added.
    webhooks_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0],
        validation_alias=AliasChoices("A3E_WEBHOOKS_RETRY_SCHEDULE"),
    )
    webhooks_max_attempts: int = Field(8, ge=1, le=50, validation_alias=AliasChoices("A3E_WEBHOOKS_MAX_ATTEMPTS"))
    # An endpoint is disabled once it has failed this many attempts in a row AND has been failing
    # for this many hours: a receiver down for a short deploy is not disabled by a burst of events.
    webhooks_disable_after_failures: int = Field(
        30, ge=1, le=100000, validation_alias=AliasChoices("A3E_WEBHOOKS_DISABLE_AFTER_FAILURES")
    )
    webhooks_disable_after_hours: float = Field(
        24.0, ge=0, le=24 * 90, validation_alias=AliasChoices("A3E_WEBHOOKS_DISABLE_AFTER_HOURS")
    )
    # ---- background jobs -----------------------------------------------------------------------
    # Set: jobs go through this Redis, to `a3e worker` processes on any machine. Unset: an embedded
    # queue in the data directory. Holds the Redis password: kept out of repr().
    redis_url: str | None = Field(None, repr=False, validation_alias=AliasChoices("A3E_REDIS_URL", "REDIS_URL"))
    # Whether the web process runs jobs itself. Default: yes without Redis, no with it.
    jobs_embedded: bool | None = Field(None, validation_alias=AliasChoices("A3E_JOBS_EMBEDDED"))
    job_workers: int = Field(2, ge=1, le=64, validation_alias=AliasChoices("A3E_JOB_WORKERS"))
    # Mapping jobs fuse BM25 with sentence embeddings (the `dense` extra, loaded by the first mapping
    # job, never at start-up). Without the extra, jobs log why and map with BM25 alone.
    mapping_dense: bool = Field(False, validation_alias=AliasChoices("A3E_MAPPING_DENSE"))
    # A consumer silent for this long is presumed dead, and the jobs it was running are queued again.
    job_lease_seconds: float = Field(
        90.0, ge=1, le=86400, validation_alias=AliasChoices("A3E_JOB_LEASE_SECONDS")
    )

    stripe_secret_key: SecretStr | None = Field(None, validation_alias=AliasChoices("STRIPE_SECRET_KEY"))
    stripe_webhook_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET")
    )
    # ---- billing (the `billing` feature; see a3e.billing.plans) ---------------------------------
    stripe_price_monthly: str | None = Field(None, validation_alias=AliasChoices("STRIPE_PRICE_MONTHLY"))
    stripe_price_annual: str | None = Field(None, validation_alias=AliasChoices("STRIPE_PRICE_ANNUAL"))
    # Where the Stripe library sends API calls; unset: Stripe itself. Tests point it at a local fake.
    stripe_api_base: str | None = Field(None, validation_alias=AliasChoices("STRIPE_API_BASE"))
    stripe_timeout: float = Field(10.0, gt=0, le=120, validation_alias=AliasChoices("STRIPE_TIMEOUT"))
    stripe_max_network_retries: int = Field(2, ge=0, le=10, validation_alias=AliasChoices("STRIPE_MAX_NETWORK_RETRIES"))
    # Seconds a signed Stripe event stays acceptable (replay protection), as Stripe's own default.
    stripe_webhook_tolerance: int = Field(300, ge=10, le=86400, validation_alias=AliasChoices("STRIPE_WEBHOOK_TOLERANCE"))
    billing_trial_days: int = Field(14, ge=0, le=365, validation_alias=AliasChoices("A3E_BILLING_TRIAL_DAYS"))
    # A past-due subscription keeps its plan this long after the first failed payment.
    billing_grace_days: int = Field(7, ge=0, le=90, validation_alias=AliasChoices("A3E_BILLING_GRACE_DAYS"))
    # Limits per plan: "seats=5,documents=200,storage_mb=1024"; a missing limit is unlimited.
    plan_trial_limits: str = Field(
        "seats=5,documents=100,storage_mb=1024", validation_alias=AliasChoices("A3E_PLAN_TRIAL_LIMITS")
    )
    plan_monthly_limits: str = Field(
        "seats=25,documents=5000,storage_mb=51200", validation_alias=AliasChoices("A3E_PLAN_MONTHLY_LIMITS")
    )
    plan_annual_limits: str = Field(
        "seats=50,documents=20000,storage_mb=204800", validation_alias=AliasChoices("A3E_PLAN_ANNUAL_LIMITS")
    )
    # Every workspace's plan while billing is off (no Stripe, or disabled): unlimited for self-hosting.
    plan_default_limits: str = Field("", validation_alias=AliasChoices("A3E_PLAN_DEFAULT_LIMITS"))

    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", validation_alias=AliasChoices("LOG_LEVEL")
    )
    log_format: Literal["json", "text"] | None = Field(None, validation_alias=AliasChoices("LOG_FORMAT"))

    # ---- field parsing -------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # env_ignore_empty drops "", but a dashboard value of " " means "unset" just as much.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if not (isinstance(value, str) and not value.strip())}
        return data

    @field_validator("environment_name", mode="before")
    @classmethod
    def _environment_known(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip().lower()
        if text not in {e.value for e in Environment}:
            raise ValueError(
                f"'{value}' is not a known environment; use 'development' or 'production' "
                "(or leave it unset on a hosting platform)"
            )
        return text

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: Any) -> Any:
        origins = _split_list(value)
        if not isinstance(origins, list):
            raise ValueError("must be a comma-separated list or a JSON list of origins")
        normalized, errors = [], []
        for origin in origins:
            try:
                normalized.append(normalize_origin(origin))
            except ValueError as exc:
                errors.append(str(exc))
        if errors:
            raise ValueError("; ".join(errors))
        return list(dict.fromkeys(normalized))

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        import ipaddress

        entries = _split_list(value)
        if not isinstance(entries, list):
            raise ValueError("must be a comma-separated list of addresses or networks")
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
        return entries

    @field_validator("app_url", mode="before")
    @classmethod
    def _parse_app_url(cls, value: Any) -> Any:
        text = str(value).strip().rstrip("/")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{text!r} is not a URL; write it as https://app.example.edu")
        return text

    @field_validator("stripe_api_base", mode="before")
    @classmethod
    def _parse_stripe_api_base(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip().rstrip("/")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise ValueError("is not a base URL; write it as https://host[:port] (no path), or leave it unset for Stripe")
        return text

    @field_validator("plan_trial_limits", "plan_monthly_limits", "plan_annual_limits", "plan_default_limits", mode="before")
    @classmethod
    def _parse_plan_limits(cls, value: Any) -> Any:
        from a3e.billing.plans import parse_limits

        text = "" if value is None else str(value)
        parse_limits(text)  # raises ValueError saying what is wrong
        return text.strip()

    @field_validator("smtp_security", mode="before")
    @classmethod
    def _lower_security(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("storage", "s3_addressing_style", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("s3_bucket", mode="before")
    @classmethod
    def _parse_bucket(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip()
        if not _S3_BUCKET.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a bucket name (3-63 lowercase letters, digits, dots or hyphens, "
                "starting and ending with a letter or digit)"
            )
        return text

    @field_validator("s3_endpoint_url", mode="before")
    @classmethod
    def _parse_endpoint(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip().rstrip("/")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("is not a URL; write it as https://host[:port], e.g. https://<account>.r2.cloudflarestorage.com")
        if parts.username or parts.password or parts.query or parts.fragment:
            # Never echo it: credentials in a URL are secrets.
            raise ValueError("must not hold credentials, a query or a fragment; set A3E_S3_ACCESS_KEY_ID and A3E_S3_SECRET_ACCESS_KEY")
        return text

    @field_validator("s3_prefix", mode="before")
    @classmethod
    def _parse_prefix(cls, value: Any) -> Any:
        text = str(value).strip().strip("/")
        if text and any(part in ("", ".", "..") for part in text.split("/")):
            raise ValueError(f"{text!r} is not a key prefix; use names separated by '/', e.g. a3e/production")
        return text

    @field_validator("disabled_features", mode="before")
    @classmethod
    def _parse_features(cls, value: Any) -> Any:
        names = _split_list(value)
        if not isinstance(names, list):
            raise ValueError("must be a comma-separated list of feature names")
        return [name.lower() for name in names]

    @field_validator("webhooks_ca_bundle")
    @classmethod
    def _ca_bundle_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a file; give the path of a PEM file of CA certificates")
        return value

    @field_validator("webhooks_retry_schedule", mode="before")
    @classmethod
    def _parse_retry_schedule(cls, value: Any) -> Any:
        entries = _split_list(value)
        if not isinstance(entries, list) or not entries:
            raise ValueError("must be a comma-separated list of seconds, e.g. 5,30,120,600,3600")
        delays = []
        for entry in entries:
            try:
                delay = float(entry)
            except (TypeError, ValueError):
                raise ValueError(f"{entry!r} is not a number of seconds") from None
            if not 0 <= delay <= 7 * 86400:
                raise ValueError(f"{entry!r}: each delay is from 0 to 604800 seconds (a week)")
            delays.append(delay)
        return delays

    @field_validator("database_url", mode="before")
    @classmethod
    def _parse_database_url(cls, value: Any) -> Any:
        return None if value is None else normalize_database_url(str(value))

    @field_validator("redis_url", mode="before")
    @classmethod
    def _parse_redis_url(cls, value: Any) -> Any:
        return None if value is None else normalize_redis_url(str(value))

    # ---- derived values ------------------------------------------------------------------

    @property
    def platform_environment(self) -> str | None:
        """The name a hosting platform gives this deployment, if any (reported, never validated)."""
        if self.railway_environment:
            return f"railway:{self.railway_environment}"
        if self.render:
            return "render"
        if self.fly_app_name:
            return f"fly:{self.fly_app_name}"
        if self.heroku_dyno:
            return "heroku"
        return None

    @property
    def environment(self) -> Environment:
        if self.environment_name:
            return Environment(self.environment_name)
        return Environment.PRODUCTION if self.platform_environment else Environment.DEVELOPMENT

    @property
    def environment_label(self) -> str:
        """What /health reports: the environment, and the platform's own name when it set one."""
        if self.environment_name or not self.platform_environment:
            return self.environment.value
        return f"{self.environment.value} ({self.platform_environment})"

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'a3e.db').as_posix()}"

    @property
    def uses_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        """The embedded default migrates itself; production migrates in a pre-deploy step."""
        return self.auto_migrate if self.auto_migrate is not None else not self.is_production

    @property
    def runs_embedded_jobs(self) -> bool:
        """Whether the web process consumes jobs: by default only when there is no Redis."""
        return self.jobs_embedded if self.jobs_embedded is not None else self.redis_url is None

    @property
    def webhooks_http_allowed(self) -> bool:
        """Plain http:// webhook endpoints: by default only outside production."""
        return self.webhooks_allow_http if self.webhooks_allow_http is not None else not self.is_production

    @property
    def jobs_queue_file(self) -> Path:
        """The embedded queue (used when A3E_REDIS_URL is unset)."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("json" if self.is_production else "text")

    @property
    def allow_any_origin(self) -> bool:
        return "*" in self.cors_origins

    def secret_values(self) -> list[str]:
        """Every secret we hold, so that log redaction can mask them wherever they appear."""
        values = [
            field.get_secret_value()
            for field in (
                self.secret_key,
                self.jwt_secret_key,
                self.stripe_secret_key,
                self.stripe_webhook_secret,
                self.smtp_password,
                self.s3_secret_access_key,
            )
            if field is not None
        ]
        if self.database_url and mask_database_url(self.database_url) != self.database_url:
            credentials = self.database_url.partition("://")[2].rpartition("@")[0]
            values.append(credentials.split(":", 1)[1])
        if self.redis_url and mask_database_url(self.redis_url) != self.redis_url:
            credentials = self.redis_url.partition("://")[2].rpartition("@")[0]
            values.append(credentials.split(":", 1)[1])
        return [value for value in values if len(value) >= 4]


SECRET_FIELDS = {
    "secret_key",
    "jwt_secret_key",
    "stripe_secret_key",
    "stripe_webhook_secret",
    "smtp_password",
    "database_url",
    "s3_secret_access_key",
    "redis_url",
}


def env_var_for(field_name: str) -> str:
    field = Settings.model_fields.get(field_name)
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        first = field.validation_alias.choices[0]
        return first if isinstance(first, str) else field_name.upper()
    return field_name.upper()


def _variable_set_for(field_name: str, env_file: Any) -> str:
    """The variable that set a field: for a field read from several, the one present."""
    field = Settings.model_fields.get(field_name)
    choices = field.validation_alias.choices if field and isinstance(field.validation_alias, AliasChoices) else []
    if len(choices) > 1:
        present = {name.upper() for name, value in os.environ.items() if value.strip()}
        for path in env_file if isinstance(env_file, (list, tuple)) else [env_file]:
            if path and Path(path).is_file():
                from dotenv import dotenv_values

                present |= {name.upper() for name, value in dotenv_values(path).items() if value and value.strip()}
        for choice in choices:
            if isinstance(choice, str) and choice.upper() in present:
                return choice
    return env_var_for(field_name)


def _field_problems(error: ValidationError, env_file: Any = None) -> tuple[list[ConfigProblem], set[str]]:
    problems: list[ConfigProblem] = []
    failed: set[str] = set()
    for item in error.errors(include_input=False, include_url=False):
        field_name = str(item["loc"][0]) if item["loc"] else ""
        # Field names and aliases both appear in locations; map either back to the field.
        for name, field in Settings.model_fields.items():
            aliases = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
            if field_name == name or field_name in aliases:
                field_name = name
                break
        failed.add(field_name)
        message = item["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(_variable_set_for(field_name, env_file), _plain(message, item["type"])))
    return problems, failed


def _plain(message: str, error_type: str) -> str:
    if error_type in ("int_parsing", "int_type"):
        return "must be a whole number"
    if error_type == "bool_parsing":
        return "must be true or false"
    if error_type == "literal_error":
        return message.replace("Input should be", "must be")
    if message.startswith("Input should be"):
        return message.replace("Input should be", "must be")
    return message


def _rule_problems(settings: Settings) -> list[ConfigProblem]:
    """Rules that depend on the environment we run in."""
    problems: list[ConfigProblem] = _storage_problems(settings)
    if not settings.is_production:
        return problems
    for field_name in ("secret_key", "jwt_secret_key"):
        value: SecretStr | None = getattr(settings, field_name)
        variable = env_var_for(field_name)
        if value is None:
            problems.append(ConfigProblem(variable, f"is required in production; {_SECRET_HELP}"))
        elif weakness := secret_weakness(value.get_secret_value()):
            problems.append(ConfigProblem(variable, f"{weakness}; {_SECRET_HELP}"))
    if settings.allow_any_origin:
        problems.append(
            ConfigProblem(
                "CORS_ORIGINS",
                "'*' is not allowed in production; list the exact origins of your front ends, "
                "e.g. https://app.example.edu,https://admin.example.edu",
            )
        )
    if settings.database_url is None and not settings.allow_sqlite_in_production:
        problems.append(
            ConfigProblem(
                "DATABASE_URL",
                "is required in production (postgresql://user:password@host:5432/dbname); "
                "for a single-machine install on SQLite set A3E_ALLOW_SQLITE_IN_PRODUCTION=true",
            )
        )
    elif settings.uses_sqlite and not settings.allow_sqlite_in_production:
        problems.append(
            ConfigProblem(
                "DATABASE_URL",
                "points at SQLite, which production refuses unless A3E_ALLOW_SQLITE_IN_PRODUCTION=true "
                "(a single-machine install); use PostgreSQL for anything with more than one replica",
            )
        )
    return problems


def _storage_problems(settings: Settings) -> list[ConfigProblem]:
    """S3 needs a bucket and both halves of a key pair (credentials come only from these settings)."""
    if settings.storage != "s3":
        return []
    needed = {
        "s3_bucket": "the bucket that holds the documents",
        "s3_access_key_id": "the access key id",
        "s3_secret_access_key": "the secret access key",
    }
    return [
        ConfigProblem(env_var_for(name), f"is required when A3E_STORAGE=s3 ({what})")
        for name, what in needed.items()
        if getattr(settings, name) is None
    ]


def read_settings(**overrides: Any) -> tuple[Settings, list[ConfigProblem]]:
    """Parse the environment; return the settings and every problem found.

    When some variables are invalid we parse again with those left at their defaults, so that the
    rules about the others still run and the operator sees every problem at once. The settings
    returned alongside problems are that best effort: fit for `a3e doctor`, never for serving.
    """
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        problems, failed = _field_problems(error, overrides.get("_env_file", Settings.model_config.get("env_file")))
        fallback = {name: Settings.model_fields[name].get_default(call_default_factory=True) for name in failed}
        if "environment_name" in failed:
            # A misspelt ENVIRONMENT is most often a deployment: report what production would refuse too.
            fallback["environment_name"] = Environment.PRODUCTION.value
        settings = Settings(**{**overrides, **fallback})
        failed_variables = {env_var_for(name) for name in failed}
        return settings, problems + [p for p in _rule_problems(settings) if p.variable not in failed_variables]
    return settings, _rule_problems(settings)


DEV_SECRETS_FILE = "dev-secrets.json"
_DEV_SECRET_NAMES = ("SECRET_KEY", "JWT_SECRET_KEY")


def _read_development_secrets(path: Path) -> dict[str, str]:
    kept = json.loads(path.read_text())
    valid = isinstance(kept, dict) and all(isinstance(kept.get(name), str) and kept[name] for name in _DEV_SECRET_NAMES)
    if not valid:
        raise ValueError(f"{path.name} is damaged; delete it and new secrets will be generated")
    return kept


def _development_secrets(data_dir: Path) -> dict[str, str]:
    """Generate the development secrets once and keep them, so tokens survive a restart."""
    path = data_dir / DEV_SECRETS_FILE
    try:
        return _read_development_secrets(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    generated = {name: secrets.token_urlsafe(48) for name in _DEV_SECRET_NAMES}
    # Write the whole file under a private name, then link it into place: the link fails if another
    # worker got there first (we then use theirs), and no one ever reads a half-written file.
    private = data_dir / f".{DEV_SECRETS_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(generated, handle)
        try:
            os.link(private, path)
        except FileExistsError:
            return _read_development_secrets(path)
    finally:
        private.unlink(missing_ok=True)
    return generated


@dataclass
class LoadedSettings:
    settings: Settings
    warnings: list[str]


def load_settings(**overrides: Any) -> LoadedSettings:
    """The settings to run with, or ConfigError naming every problem."""
    settings, problems = read_settings(**overrides)
    if problems:
        raise ConfigError(problems)
    warnings: list[str] = []
    missing = [name for name in ("secret_key", "jwt_secret_key") if getattr(settings, name) is None]
    if missing:
        # Only reachable in development: production refused missing secrets above.
        try:
            generated = _development_secrets(settings.data_dir)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                [
                    ConfigProblem(
                        "A3E_DATA_DIR",
                        f"cannot keep generated development secrets in {settings.data_dir} ({exc.__class__.__name__}: "
                        f"{getattr(exc, 'strerror', None) or exc}); make it writable or set SECRET_KEY and JWT_SECRET_KEY",
                    )
                ]
            ) from None
        updates = {name: SecretStr(generated[env_var_for(name)]) for name in missing}
        settings = settings.model_copy(update=updates)
        names = " and ".join(env_var_for(name) for name in missing)
        warnings.append(
            f"{names} not set: using generated development secrets kept in "
            f"{settings.data_dir / DEV_SECRETS_FILE}. Set them explicitly before deploying."
        )
    return LoadedSettings(settings=settings, warnings=warnings)
