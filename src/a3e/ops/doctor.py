"""`a3e doctor`: the operator's checklist, run against the current environment.

Each check prints one line — ok, warn or fail — with the fix. It never prints a secret's value
and never writes anything but throwaway files to test that the data and blob directories are
writable.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from a3e.core.settings import (
    ConfigProblem,
    Settings,
    mask_database_url,
    read_settings,
    secret_weakness,
)

OK, WARN, FAIL = "ok", "warn", "fail"

_STRIPE_SECRET = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]{16,}$")
_STRIPE_WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=]{16,}$")


@dataclass
class Check:
    name: str
    status: str
    message: str
    fix: str | None = None


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, message: str, fix: str | None = None) -> Check:
        check = Check(name, status, message, fix)
        self.checks.append(check)
        return check

    @property
    def exit_code(self) -> int:
        return 1 if any(check.status == FAIL for check in self.checks) else 0

    def counts(self) -> dict[str, int]:
        return {status: sum(c.status == status for c in self.checks) for status in (OK, WARN, FAIL)}


def run_doctor(timeout: float = 3.0, features: Sequence | None = None) -> DoctorReport:
    report = DoctorReport()
    settings, problems = read_settings()
    _check_configuration(report, settings, problems)
    _check_secrets(report, settings, problems)
    _check_cors(report, settings, problems)
    _check_data_dir(report, settings)
    _check_storage(report, settings, problems, timeout)
    engine_ok = _check_database(report, settings, problems, timeout)
    if engine_ok:
        _check_migrations(report, settings, timeout)
    else:
        report.add("migrations", FAIL, "cannot be checked while the database is unreachable")
    _check_features(report, settings, features)
    _check_port(report, settings, problems)
    _check_email(report, settings, timeout)
    _check_jobs(report, settings, problems, timeout)
    _check_mapping(report, settings)
    _check_webhooks(report, settings)
    _check_stripe(report, settings)
    _check_billing(report, settings, timeout if engine_ok else None)
    return report


def _named(problems: list[ConfigProblem], *variables: str) -> list[ConfigProblem]:
    return [p for p in problems if p.variable in variables]


def _check_configuration(report: DoctorReport, settings: Settings, problems: list[ConfigProblem]) -> None:
    env = settings.environment_label
    if _named(problems, "ENVIRONMENT"):
        report.add("environment", FAIL, _named(problems, "ENVIRONMENT")[0].message, "set ENVIRONMENT=production or development")
    else:
        report.add("environment", OK, f"{env}; {'production' if settings.is_production else 'development'} rules apply")
    # Every configuration problem not covered by a dedicated check below, one line each.
    dedicated = {"ENVIRONMENT", "SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS", "DATABASE_URL", "PORT", "A3E_REDIS_URL", "REDIS_URL"}
    for problem in problems:
        if problem.variable not in dedicated:
            report.add(f"config {problem.variable}", FAIL, problem.message)


def _check_secrets(report: DoctorReport, settings: Settings, problems: list[ConfigProblem]) -> None:
    for variable, value in (("SECRET_KEY", settings.secret_key), ("JWT_SECRET_KEY", settings.jwt_secret_key)):
        named = _named(problems, variable)
        if named:
            report.add(variable, FAIL, named[0].message)
        elif value is None:
            report.add(
                variable, WARN, "not set: a development secret is generated and kept in the data directory",
                "set it before deploying",
            )
        elif weakness := secret_weakness(value.get_secret_value()):
            report.add(variable, WARN, f"{weakness} (acceptable in development only)", "use a random value of 32+ characters")
        else:
            report.add(variable, OK, "set and strong")
    if (
        settings.secret_key is not None
        and settings.jwt_secret_key is not None
        and settings.secret_key.get_secret_value() == settings.jwt_secret_key.get_secret_value()
    ):
        report.add("secrets distinct", WARN, "SECRET_KEY and JWT_SECRET_KEY are the same value", "give each its own random value")


def _check_cors(report: DoctorReport, settings: Settings, problems: list[ConfigProblem]) -> None:
    named = _named(problems, "CORS_ORIGINS")
    if named:
        for problem in named:
            report.add("CORS_ORIGINS", FAIL, problem.message)
        return
    origins = settings.cors_origins
    if not origins:
        report.add(
            "CORS_ORIGINS", WARN, "empty: browsers on other origins cannot call the API",
            "list your front ends, e.g. CORS_ORIGINS=https://app.example.edu",
        )
    elif settings.allow_any_origin:
        report.add("CORS_ORIGINS", WARN, "'*' allows every origin (development only)", "list exact origins before deploying")
    else:
        insecure = [o for o in origins if o.startswith("http://") and not _is_local_origin(o)]
        if settings.is_production and insecure:
            report.add("CORS_ORIGINS", WARN, f"plain-http origins in production: {', '.join(insecure)}", "serve front ends over https")
        else:
            report.add("CORS_ORIGINS", OK, ", ".join(origins))


def _is_local_origin(origin: str) -> bool:
    host = origin.split("://", 1)[1].rsplit(":", 1)[0]
    return host in ("localhost", "127.0.0.1", "[::1]")


def _check_data_dir(report: DoctorReport, settings: Settings) -> None:
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".doctor-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        report.add("A3E_DATA_DIR", FAIL, f"{path} is not writable ({exc.strerror or exc})", "make it writable by the service user")
        return
    report.add("A3E_DATA_DIR", OK, f"{path.resolve()} is writable")


def _check_storage(report: DoctorReport, settings: Settings, problems: list[ConfigProblem], timeout: float) -> None:
    """Local: the blob directory is writable and has room; S3: the bucket answers our credentials."""
    if "storage" in settings.disabled_features:
        report.add("storage", OK, "disabled by A3E_DISABLED_FEATURES")
        return
    if [p for p in problems if p.variable == "A3E_STORAGE" or p.variable.startswith(("A3E_S3_", "AWS_"))]:
        report.add("storage", FAIL, "cannot be checked until its configuration above is fixed")
        return
    from a3e.evidence.storage import blob_store_from_settings

    try:
        store = blob_store_from_settings(settings)
        ok, detail = store.health(timeout=timeout)
    except Exception as exc:  # the doctor reports; it never crashes
        ok, detail = False, f"{exc.__class__.__name__}: {exc}"
    if ok:
        report.add("storage", OK, f"{store.describe()}: {detail}")
    elif settings.storage == "s3":
        report.add(
            "storage", FAIL, detail,
            "check A3E_S3_ENDPOINT_URL, A3E_S3_BUCKET and the keys; document uploads and downloads answer 503 until it answers",
        )
    else:
        report.add("storage", FAIL, detail, "make A3E_DATA_DIR writable by the service user, with room for uploads")


def _check_database(report: DoctorReport, settings: Settings, problems: list[ConfigProblem], timeout: float) -> bool:
    named = _named(problems, "DATABASE_URL")
    for problem in named:
        report.add("DATABASE_URL", FAIL, problem.message)
    if named and settings.database_url is None and not settings.uses_sqlite:
        return False
    if not named:
        kind = "SQLite" if settings.uses_sqlite else "PostgreSQL"
        status = WARN if settings.uses_sqlite and settings.is_production else OK
        report.add(
            "DATABASE_URL", status, f"{kind} at {mask_database_url(settings.sqlalchemy_url)}",
            "use PostgreSQL to run more than one replica" if status == WARN else None,
        )
    from sqlalchemy import text

    from a3e.core.database import build_engine, describe_db_error

    bounded = settings.model_copy(update={"db_connect_timeout": timeout})
    started = time.perf_counter()
    try:
        if settings.uses_sqlite:
            from a3e.core.database import ensure_sqlite_directory

            ensure_sqlite_directory(settings)
        engine = build_engine(bounded)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        report.add(
            "database", FAIL, f"unreachable: {describe_db_error(exc)}",
            "check DATABASE_URL's host, port, user and password, and that the server accepts connections from here",
        )
        return False
    report.add("database", OK, f"answers ({(time.perf_counter() - started) * 1000:.0f} ms)")
    return True


def _check_migrations(report: DoctorReport, settings: Settings, timeout: float) -> None:
    from a3e.core import migrations
    from a3e.core.database import build_engine, describe_db_error

    try:
        engine = build_engine(settings.model_copy(update={"db_connect_timeout": timeout}))
        with engine.connect() as connection:
            result = migrations.status(connection)
        engine.dispose()
    except Exception as exc:
        report.add("migrations", FAIL, f"cannot read the schema version: {describe_db_error(exc)}")
        return
    if result.ok:
        report.add("migrations", OK, f"at head {', '.join(result.extra['head'])}")
    elif settings.should_auto_migrate:
        report.add("migrations", WARN, f"{result.detail}; they will be applied when the service starts")
    else:
        report.add("migrations", FAIL, result.detail, "run `a3e migrate` (the pre-deploy command)")


def _check_features(report: DoctorReport, settings: Settings, features: Sequence | None) -> None:
    from a3e.core.features import check_importable, configuration_problem

    if features is None:
        from a3e.features import BUILTIN_FEATURES

        features = BUILTIN_FEATURES
    if not features:
        report.add("features", OK, "no optional features in this release")
    for feature in features:
        name = f"feature {feature.name}"
        if feature.name in settings.disabled_features:
            report.add(name, OK, "disabled by A3E_DISABLED_FEATURES")
            continue
        _, import_problem = check_importable(feature)
        if import_problem:
            report.add(name, FAIL, import_problem, "reinstall the package; its endpoints answer 503 until fixed")
            continue
        config_problem = configuration_problem(feature, settings)
        if config_problem:
            report.add(name, WARN, f"{config_problem}; its endpoints answer 503", f"or disable it: A3E_DISABLED_FEATURES={feature.name}")
        else:
            report.add(name, OK, "importable and configured")
    unknown = set(settings.disabled_features) - {f.name for f in features}
    if unknown:
        report.add("A3E_DISABLED_FEATURES", WARN, f"unknown feature names: {', '.join(sorted(unknown))}")


def _check_port(report: DoctorReport, settings: Settings, problems: list[ConfigProblem]) -> None:
    named = _named(problems, "PORT")
    if named:
        report.add("PORT", FAIL, named[0].message, "PORT must be a number from 1 to 65535 (platforms set it for you)")
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        host = settings.host if settings.host not in ("", "0.0.0.0") else "0.0.0.0"
        try:
            sock.bind((host, settings.port))
        except OSError as exc:
            report.add(
                "PORT", WARN, f"{settings.port} on {host} is in use or not bindable ({exc.strerror or exc})",
                "stop whatever listens there, or choose another PORT",
            )
            return
    report.add("PORT", OK, f"{settings.port} is valid and free on {host}")


def _check_email(report: DoctorReport, settings: Settings, timeout: float) -> None:
    if not settings.smtp_host:
        if settings.is_production:
            report.add(
                "email", WARN, "SMTP_HOST is not set: invitations, password resets and verifications are not sent",
                "set SMTP_HOST (and SMTP_USERNAME/SMTP_PASSWORD) for your mail provider",
            )
        else:
            report.add("email", OK, f"development: messages are written to {settings.data_dir / 'outbox'}")
        return
    import smtplib
    import ssl

    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        if settings.smtp_security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        with client:
            client.ehlo()
            if settings.smtp_security == "starttls":
                if not client.has_extn("starttls"):
                    report.add("email", FAIL, f"{where} does not offer STARTTLS", "set SMTP_SECURITY=ssl or none as your provider says")
                    return
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if settings.smtp_username and settings.smtp_password:
                client.login(settings.smtp_username, settings.smtp_password.get_secret_value())
    except smtplib.SMTPAuthenticationError:
        report.add("email", FAIL, f"{where} refused SMTP_USERNAME/SMTP_PASSWORD", "check the credentials with your provider")
        return
    except (OSError, smtplib.SMTPException) as exc:
        report.add("email", FAIL, f"cannot reach {where} ({exc.__class__.__name__}: {exc})", "check SMTP_HOST, SMTP_PORT and SMTP_SECURITY")
        return
    login = " and accepts the login" if settings.smtp_username else ""
    report.add("email", OK, f"{where} answers ({settings.smtp_security}){login}")


def _check_jobs(report: DoctorReport, settings: Settings, problems: list[ConfigProblem], timeout: float) -> None:
    named = _named(problems, "A3E_REDIS_URL", "REDIS_URL")
    if named:
        report.add("jobs", FAIL, f"{named[0].variable}: {named[0].message}")
        return
    if not settings.redis_url:
        where = settings.jobs_queue_file
        if settings.runs_embedded_jobs and settings.is_production and not settings.uses_sqlite:
            report.add(
                "jobs", WARN, f"embedded: queued in {where} on this machine, run inside the service",
                "keep A3E_DATA_DIR on a persistent volume (queued jobs are lost with the disk), "
                "or set A3E_REDIS_URL and run `a3e worker`",
            )
        elif settings.runs_embedded_jobs:
            report.add("jobs", OK, f"embedded: queued in {where} and run inside the service")
        else:
            report.add(
                "jobs", WARN, f"embedded queue {where}, but A3E_JOBS_EMBEDDED=false: jobs wait until an `a3e worker` runs here",
                "run `a3e worker` on this machine, or unset A3E_JOBS_EMBEDDED",
            )
        return
    import redis

    where = mask_database_url(settings.redis_url)
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except redis.exceptions.AuthenticationError:
        report.add("jobs", FAIL, f"Redis at {where} refused the password", "check the password in A3E_REDIS_URL")
        return
    except redis.exceptions.RedisError as exc:
        report.add(
            "jobs", FAIL, f"Redis at {where} is unreachable ({exc.__class__.__name__}: {exc})",
            "check A3E_REDIS_URL's host and port and that Redis accepts connections from here; "
            "the service and workers keep retrying meanwhile",
        )
        return
    consumers = "run by `a3e worker` processes" + (" and inside the service" if settings.runs_embedded_jobs else "")
    report.add("jobs", OK, f"Redis at {where} answers; jobs are {consumers}")


def _check_mapping(report: DoctorReport, settings: Settings) -> None:
    """Which engine the mapping jobs use, and whether the dense extra is where it should be."""
    if not settings.mapping_dense:
        report.add("mapping", OK, "BM25 engine (the default install)")
        return
    from a3e.mapping.dense import dense_unavailable

    missing = dense_unavailable()
    if missing:
        report.add("mapping", WARN, f"A3E_MAPPING_DENSE=true, but {missing}; jobs map with BM25",
                   "install the extra where jobs run, or unset A3E_MAPPING_DENSE")
    elif settings.runs_embedded_jobs:
        report.add(
            "mapping", WARN, "dense engine with embedded jobs: its model (0.5–1 GB) loads inside the web process",
            "set A3E_REDIS_URL and run the jobs in `a3e worker` processes",
        )
    else:
        report.add("mapping", OK, "dense engine (the extra is installed); mapping runs in `a3e worker` processes")


def _check_webhooks(report: DoctorReport, settings: Settings) -> None:
    """Outgoing webhooks: where deliveries may go, and how failing endpoints are retried and disabled."""
    policy = (
        f"{settings.webhooks_max_attempts} attempts per delivery; endpoints disabled after "
        f"{settings.webhooks_disable_after_failures} failures over {settings.webhooks_disable_after_hours:g} h"
    )
    if settings.webhooks_allow_private:
        status = WARN if settings.is_production else OK
        report.add("webhooks", status, f"deliveries may go to private and loopback addresses (A3E_WEBHOOKS_ALLOW_PRIVATE); {policy}",
                   "leave A3E_WEBHOOKS_ALLOW_PRIVATE unset unless the receivers are on your own network"
                   if status == WARN else None)
    elif settings.is_production and settings.webhooks_http_allowed:
        report.add("webhooks", WARN, f"plain http:// endpoints are allowed in production; {policy}",
                   "unset A3E_WEBHOOKS_ALLOW_HTTP: deliveries then need https://")
    else:
        report.add("webhooks", OK, f"deliveries only to public addresses{'' if settings.webhooks_http_allowed else ' over https'}; {policy}")


def _check_stripe(report: DoctorReport, settings: Settings) -> None:
    secret = settings.stripe_secret_key.get_secret_value() if settings.stripe_secret_key else None
    webhook = settings.stripe_webhook_secret.get_secret_value() if settings.stripe_webhook_secret else None
    if secret is None and webhook is None:
        report.add("stripe", OK, "not configured (billing is optional; its endpoints answer 503)")
        return
    if secret is None:
        report.add("STRIPE_SECRET_KEY", WARN, "not set while STRIPE_WEBHOOK_SECRET is", "set both, or neither")
    elif secret.startswith("pk_"):
        report.add("STRIPE_SECRET_KEY", FAIL, "is a publishable key (pk_…), not a secret key", "use the sk_… or rk_… key")
    elif not _STRIPE_SECRET.match(secret):
        report.add("STRIPE_SECRET_KEY", FAIL, "does not look like a Stripe secret key (sk_test_…, sk_live_…, rk_…)")
    else:
        live = "_live_" in secret
        if settings.is_production and not live:
            report.add("STRIPE_SECRET_KEY", WARN, "a test-mode key in production: no real payments", "use the live key")
        elif not settings.is_production and live:
            report.add("STRIPE_SECRET_KEY", WARN, "a live-mode key outside production: real charges", "use a test key")
        else:
            report.add("STRIPE_SECRET_KEY", OK, f"{'live' if live else 'test'}-mode key, as expected for {settings.environment.value}")
    if webhook is None:
        report.add("STRIPE_WEBHOOK_SECRET", WARN, "not set: incoming Stripe events are refused", "copy the endpoint's signing secret (whsec_…)")
    elif not _STRIPE_WEBHOOK_SECRET.match(webhook):
        report.add("STRIPE_WEBHOOK_SECRET", FAIL, "does not look like a webhook signing secret (whsec_…)")
    else:
        report.add("STRIPE_WEBHOOK_SECRET", OK, "set")


def _check_billing(report: DoctorReport, settings: Settings, timeout: float | None) -> None:
    """A half-configured Stripe (billing stays off: the default plan for everyone), and Stripe events
    that fail to apply (each keeps its reason and is retried with backoff)."""
    from a3e.billing.plans import billing_enabled, configuration_problem

    if settings.stripe_secret_key is None or "billing" in settings.disabled_features:
        return
    problem = configuration_problem(settings)
    if problem:
        report.add("billing", FAIL, f"{problem}: billing is off and every workspace is on the default plan",
                   "set the missing variables (see .env.example)")
        return
    if timeout is None or not billing_enabled(settings):
        return
    from sqlalchemy import func, select

    from a3e.billing.models import EventStatus, StripeEvent
    from a3e.core.database import build_engine, describe_db_error

    try:
        engine = build_engine(settings.model_copy(update={"db_connect_timeout": timeout}))
        with engine.connect() as connection:
            failed = connection.execute(
                select(func.count(), func.max(StripeEvent.last_error)).where(StripeEvent.status == EventStatus.FAILED.value)
            ).one()
        engine.dispose()
    except Exception as exc:
        report.add("billing", WARN, f"cannot read the Stripe events: {describe_db_error(exc)}")
        return
    if failed[0]:
        report.add("billing", FAIL, f"{failed[0]} Stripe events failed to apply (e.g. {str(failed[1])[:200]})",
                   "see stripe_events.last_error; they are retried with backoff")
    else:
        report.add("billing", OK, "Stripe configured; no failing events")


_SYMBOL = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}


def print_report(report: DoctorReport, *, as_json: bool = False, stream=None) -> None:
    stream = stream or sys.stdout
    if as_json:
        payload = {"ok": report.exit_code == 0, "counts": report.counts(), "checks": [asdict(c) for c in report.checks]}
        print(json.dumps(payload, indent=2), file=stream)
        return
    for check in report.checks:
        line = f"[{_SYMBOL[check.status]}] {check.name}: {check.message}"
        if check.fix and check.status != OK:
            line += f" — fix: {check.fix}"
        print(line, file=stream)
    counts = report.counts()
    verdict = "all checks pass" if report.exit_code == 0 else "some checks FAIL"
    print(f"{verdict}: {counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail", file=stream)
