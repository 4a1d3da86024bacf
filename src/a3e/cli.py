"""The `a3e` command: serve, worker, migrate, doctor, probe, standards, map, version.

Heavy modules are imported inside each command, so `a3e --help` and a configuration error are
answered at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: "configuration error"
EXIT_USAGE = 64  # EX_USAGE: a malformed command line (never confused with probe's verdict codes)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _port(value: str | int) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 1 <= port <= 65535 else None


def _load_or_exit():
    from a3e.core.settings import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as error:
        print(error.render(), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from a3e.core.settings import ConfigError, ConfigProblem, load_settings, read_settings

    # Command-line problems are reported together with the environment's, in one run.
    problems, overrides = [], {}
    if args.port is not None:
        port = _port(args.port)
        if port is None:
            problems.append(ConfigProblem("--port", f"'{args.port}' is not a port; use a number from 1 to 65535"))
        else:
            overrides["port"] = port  # a valid --port stands in for $PORT
    if args.workers is not None and args.workers < 1:
        problems.append(ConfigProblem("--workers", "must be at least 1"))
    problems += read_settings(**overrides)[1]
    if problems:
        print(ConfigError(problems).render(), file=sys.stderr)
        return EXIT_CONFIG
    try:
        loaded = load_settings(**overrides)
    except ConfigError as error:  # e.g. the data directory cannot hold development secrets
        print(error.render(), file=sys.stderr)
        return EXIT_CONFIG
    settings = loaded.settings
    port, workers = settings.port, args.workers or settings.workers
    host = args.host or settings.host

    import uvicorn

    from a3e.core.logging import configure_logging

    configure_logging(settings.log_level, settings.effective_log_format, settings.secret_values())
    common = dict(
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # our middleware logs each request, with its request id
        server_header=False,
        # Forwarded headers are interpreted by the app, for the proxies A3E_TRUSTED_PROXIES names.
        proxy_headers=False,
        timeout_graceful_shutdown=15,
        timeout_keep_alive=30,
    )
    if workers == 1:
        from a3e.app import create_app

        uvicorn.run(create_app(settings, warnings=loaded.warnings), **common)
    else:
        if settings.should_auto_migrate:
            _migrate_before_workers(settings)
        uvicorn.run("a3e.app:create_app_from_env", factory=True, workers=workers, **common)
    return 0


def _migrate_before_workers(settings) -> None:
    """With several workers, migrate once here rather than racing in each; if the database is
    down, the workers keep trying in the background."""
    import logging

    from a3e.core import migrations
    from a3e.core.database import build_engine, describe_db_error, ensure_sqlite_directory

    try:
        ensure_sqlite_directory(settings)
        engine = build_engine(settings)
        try:
            migrations.upgrade(engine)
        finally:
            engine.dispose()
    except Exception as exc:
        logging.getLogger("a3e").warning("migrations not applied before start (%s)", describe_db_error(exc))


def cmd_worker(args: argparse.Namespace) -> int:
    """Consume jobs until SIGTERM/SIGINT: from Redis when A3E_REDIS_URL is set, otherwise from the
    embedded queue file (a separate local worker). An unreachable Redis is retried with backoff."""
    from a3e.core.settings import ConfigError, ConfigProblem, load_settings, read_settings

    problems = []
    if args.workers is not None and not 1 <= args.workers <= 64:
        problems.append(ConfigProblem("--workers", "must be from 1 to 64"))
    if args.grace is not None and not 0 <= args.grace <= 3600:
        problems.append(ConfigProblem("--grace", "must be from 0 to 3600 seconds"))
    problems += read_settings()[1]
    if problems:
        print(ConfigError(problems).render(), file=sys.stderr)
        return EXIT_CONFIG
    try:
        loaded = load_settings()
    except ConfigError as error:
        print(error.render(), file=sys.stderr)
        return EXIT_CONFIG
    settings = loaded.settings

    import logging

    from a3e.core.logging import configure_logging
    from a3e.jobs.service import STOP_GRACE_SECONDS, JobRuntime

    configure_logging(settings.log_level, settings.effective_log_format, settings.secret_values())
    log = logging.getLogger("a3e")
    for warning in loaded.warnings:
        log.warning(warning)
    runtime = JobRuntime(settings, extra_modules=tuple(args.import_modules), periodic=not args.no_periodic)
    try:
        runtime.open()
    except Exception as exc:
        print(f"a3e worker: cannot open the job queue {runtime.label}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        runtime.run_consumer(args.workers, grace=STOP_GRACE_SECONDS if args.grace is None else args.grace)
    finally:
        runtime.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from a3e.core import migrations
    from a3e.core.database import build_engine, describe_db_error, ensure_sqlite_directory
    from a3e.core.settings import mask_database_url

    settings = _load_or_exit().settings
    target = mask_database_url(settings.sqlalchemy_url)
    try:
        ensure_sqlite_directory(settings)
        engine = build_engine(settings)
        with engine.connect() as connection:
            before = migrations.status(connection)
        if args.check:
            engine.dispose()
            print(f"{target}: {before.detail} (current {before.extra['current']}, head {before.extra['head']})")
            return 0 if before.ok else 1
        if before.ok:
            print(f"{target}: already at the latest migration {before.extra['head']}")
            engine.dispose()
            return 0
        migrations.upgrade(engine)
        with engine.connect() as connection:
            after = migrations.status(connection)
        engine.dispose()
    except Exception as exc:
        print(f"{target}: cannot migrate: {describe_db_error(exc)}", file=sys.stderr)
        return 1
    print(f"{target}: migrated from {before.extra['current'] or 'an empty database'} to {after.extra['current']}")
    return 0 if after.ok else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from a3e.ops.doctor import print_report, run_doctor

    report = run_doctor(timeout=args.timeout)
    print_report(report, as_json=args.json)
    return report.exit_code


def cmd_probe(args: argparse.Namespace) -> int:
    from a3e.ops.probe import print_probe, run_probe

    result = run_probe(args.url, origins=args.origin, timeout=args.timeout)
    print_probe(result, as_json=args.json)
    return result.exit_code


def cmd_standards_validate(args: argparse.Namespace) -> int:
    from a3e.standards.cli import validate_files

    return validate_files(args.files, fmt=args.format, as_json=args.json)


def cmd_map(args: argparse.Namespace) -> int:
    from a3e.mapping.cli import run_map

    return run_map(args)


def cmd_version(args: argparse.Namespace) -> int:
    from a3e import __version__

    print(f"a3e {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="a3e", description="A³E — Autonomous Accreditation & Audit Engine")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", help="interface to bind (default A3E_HOST or 0.0.0.0)")
    serve.add_argument("--port", help="port to bind (default $PORT or 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default WEB_CONCURRENCY or 1)")
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser(
        "worker",
        help="run background jobs: from Redis (A3E_REDIS_URL), or from the embedded queue file",
        epilog="SIGTERM or SIGINT: running jobs finish (within --grace), the rest are queued again, exit 0",
    )
    worker.add_argument("--workers", type=int, help="jobs run at once (default A3E_JOB_WORKERS or 2)")
    worker.add_argument("--grace", type=float, help="seconds running jobs get to finish at stop (default 10)")
    worker.add_argument(
        "--no-periodic", action="store_true",
        help="do not schedule periodic jobs (housekeeping) from this worker; other consumers still do",
    )
    worker.add_argument(
        "--import", dest="import_modules", action="append", default=[], metavar="MODULE",
        help="also load the jobs declared in MODULE (repeatable; the built-in ones always are)",
    )
    worker.set_defaults(handler=cmd_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to the latest migration")
    migrate.add_argument("--check", action="store_true", help="only report; exit 1 when migrations are pending")
    migrate.set_defaults(handler=cmd_migrate)

    doctor = commands.add_parser("doctor", help="check this environment's configuration, database and features")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--timeout", type=float, default=3.0, help="seconds for each network check (default 3)")
    doctor.set_defaults(handler=cmd_doctor)

    probe = commands.add_parser(
        "probe",
        help="check a deployment from outside: down, not ready, CORS wrong, or healthy",
        epilog="exit status: 0 healthy, 2 backend down, 3 not ready, 4 CORS not allowed, 64 invalid input",
    )
    probe.add_argument("url", help="base URL of the deployment, e.g. https://api.example.edu")
    probe.add_argument(
        "--origin", action="append", default=[], help="a front-end origin to test CORS for (repeatable)"
    )
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds for each request (default 5)")
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    probe.set_defaults(handler=cmd_probe)

    standards = commands.add_parser("standards", help="standards catalogs: check a custom framework file")
    standards_commands = standards.add_subparsers(dest="standards_command", required=True, metavar="COMMAND", parser_class=_Parser)
    validate = standards_commands.add_parser(
        "validate",
        help="check a catalog file (CSV with id, parent, title, text; JSON; YAML) before importing it",
        epilog="exit status: 0 valid, 1 invalid or unreadable, 64 invalid input",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="the file(s) to check")
    validate.add_argument("--format", choices=("csv", "json", "yaml"), help="default: from the extension or content")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.set_defaults(handler=cmd_standards_validate)

    mapping = commands.add_parser(
        "map",
        help="rank standards for passages: evaluate on labelled queries, or show the top standards for a text",
        epilog="exit status: 0 done, 64 invalid input (missing file, bad JSON line, unknown framework)",
    )
    mapping_catalog = mapping.add_mutually_exclusive_group(required=True)
    mapping_catalog.add_argument("--catalog", metavar="CATALOG.json", help="a catalog: JSON list of {id, title, text, section}")
    mapping_catalog.add_argument("--framework", help="a built-in catalog: sacscoc, hlc, msche, neche, nwccu, wscuc")
    mapping.add_argument("--edition", help="with --framework: the edition (default: the current one)")
    mapping_input = mapping.add_mutually_exclusive_group(required=True)
    mapping_input.add_argument("--queries", metavar="QUERIES.jsonl", help="one JSON object a line: {qid, text, section?, relevant?}")
    mapping_input.add_argument("--text", help="one passage: print its top standards with their confidence")
    mapping.add_argument("--headings", help="with --text: the passage's surrounding headings (context)")
    mapping.add_argument("--no-context", action="store_true", help="with --queries: ignore each query's section")
    mapping.add_argument("--top", type=int, default=10, help="standards per query in the output (default 10)")
    mapping.add_argument("--output", metavar="RANKINGS.jsonl", help="write {qid, ranked, scores} per query here")
    mapping.add_argument("--json", action="store_true", help="print the figures as JSON")
    mapping.add_argument("--dense", action="store_true", help="fuse BM25 with sentence embeddings (needs the dense extra)")
    mapping.set_defaults(handler=cmd_map)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
