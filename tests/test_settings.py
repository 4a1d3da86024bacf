"""Configuration, in-process: every rule of `read_settings()` / `load_settings()`.

`hermetic_env` (conftest) has cleared every variable Settings reads and moved into an empty
tmp_path, so each test sets exactly what it means to test, and `.env` means tmp_path/.env.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

import pytest

from a3e.core import settings as settings_module
from a3e.core.settings import (
    DEV_SECRETS_FILE,
    ConfigError,
    ConfigProblem,
    Environment,
    load_settings,
    mask_database_url,
    normalize_database_url,
    normalize_origin,
    read_settings,
    secret_weakness,
)

PG_PASSWORD = "Pg-Pass-7f3e9c"
PG_URL = f"postgresql://a3e:{PG_PASSWORD}@db.internal:5432/a3e"


def strong_secret() -> str:
    return secrets.token_urlsafe(48)


def problems() -> dict[str, str]:
    """The problems read_settings() finds, by variable; each variable must be reported once."""
    _, found = read_settings()
    variables = [problem.variable for problem in found]
    assert len(variables) == len(set(variables)), f"a variable reported twice: {found}"
    return {problem.variable: problem.message for problem in found}


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A complete, valid production configuration; tests break one thing at a time."""
    values = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": strong_secret(),
        "JWT_SECRET_KEY": strong_secret(),
        "DATABASE_URL": PG_URL,
        "CORS_ORIGINS": "https://app.example.edu",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


# ---------------------------------------------------------------------------------------------
# Baselines: nothing set is a valid development configuration; the production fixture is valid.


def test_nothing_set_is_a_valid_development_configuration():
    settings, found = read_settings()
    assert found == []
    assert settings.environment is Environment.DEVELOPMENT
    assert not settings.is_production
    assert settings.environment_label == "development"
    assert settings.port == 8000
    assert settings.cors_origins == []
    assert settings.uses_sqlite
    assert settings.sqlalchemy_url == f"sqlite:///{(Path('data') / 'a3e.db').as_posix()}"
    assert settings.effective_log_format == "text"


def test_complete_production_configuration_has_no_problems(production):
    settings, found = read_settings()
    assert found == []
    assert settings.is_production
    assert settings.environment_label == "production"
    assert settings.database_url == f"postgresql+psycopg://a3e:{PG_PASSWORD}@db.internal:5432/a3e"
    assert not settings.should_auto_migrate
    assert settings.effective_log_format == "json"
    loaded = load_settings()
    assert loaded.warnings == []
    assert loaded.settings.secret_key.get_secret_value() == production["SECRET_KEY"]


# ---------------------------------------------------------------------------------------------
# Each configuration error on its own.


@pytest.mark.parametrize("value", ["staging", "prod", "dev", "PRODUCTIONN"])
def test_unknown_environment_is_an_error(monkeypatch, production, value):
    monkeypatch.setenv("ENVIRONMENT", value)
    found = problems()
    assert list(found) == ["ENVIRONMENT"]
    assert f"'{value}'" in found["ENVIRONMENT"]
    assert "development" in found["ENVIRONMENT"] and "production" in found["ENVIRONMENT"]
    with pytest.raises(ConfigError):
        load_settings()


def test_unknown_environment_also_reports_what_production_would_refuse(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "prod")
    found = problems()
    assert list(found)[0] == "ENVIRONMENT"
    assert {"SECRET_KEY", "JWT_SECRET_KEY", "DATABASE_URL"} <= set(found)


@pytest.mark.parametrize("value", ["Production", " PRODUCTION ", "development"])
def test_environment_is_case_and_space_insensitive(monkeypatch, production, value):
    monkeypatch.setenv("ENVIRONMENT", value)
    settings, found = read_settings()
    assert found == []
    assert settings.environment.value == value.strip().lower()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", "whole number"),
        ("80.5", "whole number"),
        ("0", "greater than or equal to 1"),
        ("-1", "greater than or equal to 1"),
        ("70000", "less than or equal to 65535"),
    ],
)
def test_invalid_port_is_an_error(monkeypatch, value, expected):
    monkeypatch.setenv("PORT", value)
    found = problems()
    assert list(found) == ["PORT"]
    assert expected in found["PORT"]
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [problem.variable for problem in caught.value.problems] == ["PORT"]


@pytest.mark.parametrize("value", ["1", "8080", "65535"])
def test_valid_port(monkeypatch, value):
    monkeypatch.setenv("PORT", value)
    settings, found = read_settings()
    assert found == []
    assert settings.port == int(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://app.example.edu/login", "has a path"),
        ("ftp://files.example.edu", "is not an origin"),
        ("not a url at all", "is not an origin"),
        ("app.example.edu", "is not an origin"),
        ("https://", "is not an origin"),
        ("https://user:pw@app.example.edu", "credentials"),
        ("https://app.example.edu:99999", "invalid port"),
        ('["https://app.example.edu",', "not valid JSON"),
    ],
)
def test_bad_cors_origin_is_an_error(monkeypatch, value, expected):
    monkeypatch.setenv("CORS_ORIGINS", f"https://ok.example.edu,{value}" if not value.startswith("[") else value)
    found = problems()
    assert list(found) == ["CORS_ORIGINS"]
    assert expected in found["CORS_ORIGINS"]


def test_every_bad_origin_is_named_in_one_problem(monkeypatch):
    monkeypatch.setenv("CORS_ORIGINS", "ftp://one.example.edu, https://two.example.edu/path ,https://ok.example.edu")
    found = problems()
    assert list(found) == ["CORS_ORIGINS"]
    assert "ftp://one.example.edu" in found["CORS_ORIGINS"]
    assert "https://two.example.edu/path" in found["CORS_ORIGINS"]
    assert "ok.example.edu" not in found["CORS_ORIGINS"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://a3e:pw@db:3306/a3e", "unsupported scheme 'mysql'"),
        ("postgresql+asyncpg://a3e:pw@db/a3e", "unsupported scheme 'postgresql+asyncpg'"),
        ("redis://db:6379/0", "unsupported scheme 'redis'"),
        ("just-a-hostname", "is not a URL"),
        ("postgresql://", "has no host or database name"),
    ],
)
def test_unsupported_database_url_is_an_error(monkeypatch, url, expected):
    monkeypatch.setenv("DATABASE_URL", url)
    found = problems()
    assert list(found) == ["DATABASE_URL"]
    assert expected in found["DATABASE_URL"]


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://a3e:{PG_PASSWORD}@db:notaport/a3e",
        f"postgresql://a3e:{PG_PASSWORD}@db:/a3e",
        f"postgresql://a3e:{PG_PASSWORD}@db:70000/a3e",
        # A platform reference that was never expanded.
        "postgresql://${PGUSER}:${PGPASSWORD}@${PGHOST}:${PGPORT}/${PGDATABASE}",
    ],
)
def test_database_url_with_a_bad_port_is_a_configuration_error(monkeypatch, url):
    # Regression: these passed validation and then crashed start-up with a traceback in create_engine.
    monkeypatch.setenv("DATABASE_URL", url)
    found = problems()
    assert list(found) == ["DATABASE_URL"]
    assert "invalid port" in found["DATABASE_URL"]
    assert PG_PASSWORD not in found["DATABASE_URL"]


@pytest.mark.parametrize("url", ["sqlite://data/a3e.db", "sqlite:a3e.db"])
def test_sqlite_url_without_the_third_slash_is_a_configuration_error(monkeypatch, url):
    # Regression: `sqlite://data/a3e.db` passed validation and then crashed start-up.
    monkeypatch.setenv("DATABASE_URL", url)
    found = problems()
    assert list(found) == ["DATABASE_URL"]
    assert "sqlite:///" in found["DATABASE_URL"]


@pytest.mark.parametrize("value", ["verbose", "trace", "0"])
def test_invalid_log_level_is_an_error(monkeypatch, value):
    monkeypatch.setenv("LOG_LEVEL", value)
    found = problems()
    assert list(found) == ["LOG_LEVEL"]
    assert "'debug'" in found["LOG_LEVEL"] and "'critical'" in found["LOG_LEVEL"]


def test_log_level_and_format_are_case_insensitive(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("LOG_FORMAT", " JSON ")
    settings, found = read_settings()
    assert found == []
    assert (settings.log_level, settings.effective_log_format) == ("warning", "json")


def test_invalid_log_format_is_an_error(monkeypatch):
    monkeypatch.setenv("LOG_FORMAT", "xml")
    found = problems()
    assert list(found) == ["LOG_FORMAT"]
    assert "'json'" in found["LOG_FORMAT"] and "'text'" in found["LOG_FORMAT"]


def test_invalid_boolean_is_an_error(monkeypatch):
    monkeypatch.setenv("A3E_ALLOW_SQLITE_IN_PRODUCTION", "maybe")
    assert problems() == {"A3E_ALLOW_SQLITE_IN_PRODUCTION": "must be true or false"}


@pytest.mark.parametrize("variable", ["WEB_CONCURRENCY", "A3E_WORKERS"])
def test_problem_names_the_variable_that_was_set(monkeypatch, variable):
    # Regression: a bad A3E_WORKERS was reported as WEB_CONCURRENCY, a variable the operator never set.
    monkeypatch.setenv(variable, "four")
    assert problems() == {variable: "must be a whole number"}


def test_problem_names_the_variable_that_was_set_in_dotenv(tmp_path):
    (tmp_path / ".env").write_text("A3E_WORKERS=four\n")
    assert problems() == {"A3E_WORKERS": "must be a whole number"}


# ---------------------------------------------------------------------------------------------
# Production rules, one at a time.


@pytest.mark.parametrize("variable", ["SECRET_KEY", "JWT_SECRET_KEY"])
def test_production_requires_each_secret(monkeypatch, production, variable):
    monkeypatch.delenv(variable)
    found = problems()
    assert list(found) == [variable]
    assert "is required in production" in found[variable]
    assert "secrets.token_urlsafe" in found[variable]  # how to fix it
    with pytest.raises(ConfigError):
        load_settings()


def test_production_never_generates_secrets(monkeypatch, production, tmp_path):
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.delenv("JWT_SECRET_KEY")
    monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert {problem.variable for problem in caught.value.problems} == {"SECRET_KEY", "JWT_SECRET_KEY"}
    assert not (tmp_path / "data" / DEV_SECRETS_FILE).exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("short-but-random-Xy7", "too short"),
        ("your-secret-key-here", "placeholder"),
        ("changeme", "placeholder"),
        ("CHANGEME", "placeholder"),
        ("please-change-this-secret-key-before-going-live", "placeholder"),
        ("ab" * 24, "repetitive"),
        ("0123456780123456780123456780123456", "repetitive"),
    ],
)
@pytest.mark.parametrize("variable", ["SECRET_KEY", "JWT_SECRET_KEY"])
def test_production_refuses_weak_secrets(monkeypatch, production, variable, value, expected):
    monkeypatch.setenv(variable, value)
    found = problems()
    assert list(found) == [variable]
    assert expected in found[variable]
    assert value not in found[variable]


def test_weak_secrets_are_fine_in_development(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "dev")
    monkeypatch.setenv("JWT_SECRET_KEY", "dev")
    assert problems() == {}


def test_secret_weakness():
    assert secret_weakness(strong_secret()) is None
    assert secret_weakness("x" * 31).startswith("is too short (31 characters")
    assert secret_weakness("Secret") == "is a placeholder value"
    assert secret_weakness("a" * 64) == "is too repetitive to be random"


@pytest.mark.parametrize("value", ["*", "https://app.example.edu,*", '["*"]'])
def test_production_refuses_a_wildcard_origin(monkeypatch, production, value):
    monkeypatch.setenv("CORS_ORIGINS", value)
    found = problems()
    assert list(found) == ["CORS_ORIGINS"]
    assert "'*' is not allowed in production" in found["CORS_ORIGINS"]


def test_wildcard_origin_is_allowed_in_development(monkeypatch):
    monkeypatch.setenv("CORS_ORIGINS", "*")
    settings, found = read_settings()
    assert found == []
    assert settings.allow_any_origin


@pytest.mark.parametrize("url", ["sqlite:///data/a3e.db", "sqlite:////srv/a3e/a3e.db", None])
def test_production_refuses_sqlite(monkeypatch, production, url):
    if url is None:
        monkeypatch.delenv("DATABASE_URL")  # unset means the embedded SQLite file
    else:
        monkeypatch.setenv("DATABASE_URL", url)
    found = problems()
    assert list(found) == ["DATABASE_URL"]
    assert "A3E_ALLOW_SQLITE_IN_PRODUCTION=true" in found["DATABASE_URL"]


@pytest.mark.parametrize("url", ["sqlite:///data/a3e.db", None])
@pytest.mark.parametrize("flag", ["true", "1", "TRUE", "yes"])
def test_production_allows_sqlite_when_explicitly_allowed(monkeypatch, production, url, flag):
    if url is None:
        monkeypatch.delenv("DATABASE_URL")
    else:
        monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("A3E_ALLOW_SQLITE_IN_PRODUCTION", flag)
    settings, found = read_settings()
    assert found == []
    assert settings.is_production and settings.uses_sqlite
    assert load_settings().settings.uses_sqlite


def test_allow_sqlite_false_still_refuses(monkeypatch, production):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///data/a3e.db")
    monkeypatch.setenv("A3E_ALLOW_SQLITE_IN_PRODUCTION", "false")
    assert list(problems()) == ["DATABASE_URL"]


# ---------------------------------------------------------------------------------------------
# Several problems together: all reported at once, one problem each.


def test_field_errors_are_all_reported_together(monkeypatch):
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("CORS_ORIGINS", "ftp://x.example.edu")
    monkeypatch.setenv("DATABASE_URL", "mysql://a3e:pw@db/a3e")
    monkeypatch.setenv("LOG_LEVEL", "loud")
    monkeypatch.setenv("A3E_MAX_BODY_KB", "0")
    found = problems()
    assert set(found) == {"PORT", "CORS_ORIGINS", "DATABASE_URL", "LOG_LEVEL", "A3E_MAX_BODY_KB"}


def test_field_errors_and_production_rules_are_all_reported_together(monkeypatch):
    distinctive = "Weak-But-Distinctive-42"
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", distinctive)
    # JWT_SECRET_KEY unset
    monkeypatch.setenv("CORS_ORIGINS", "*")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///data/a3e.db")
    monkeypatch.setenv("PORT", "70000")
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    error = caught.value
    expected = {"SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS", "DATABASE_URL", "PORT", "LOG_LEVEL"}
    variables = [problem.variable for problem in error.problems]
    assert sorted(variables) == sorted(expected)
    assert all(isinstance(problem, ConfigProblem) for problem in error.problems)

    text = str(error)
    lines = text.splitlines()
    assert lines[0] == "A3E cannot start: 6 configuration problems."
    problem_lines = [line for line in lines if line.startswith("  - ")]
    assert len(problem_lines) == 6
    for variable in expected:
        assert sum(line.startswith(f"  - {variable}: ") for line in problem_lines) == 1, variable
    assert "Traceback" not in text
    assert distinctive not in text and distinctive not in repr(error.problems)


def test_field_error_does_not_hide_the_rules_about_other_variables(monkeypatch, production):
    # PORT is invalid; the '*' origin must still be reported in the same run.
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("CORS_ORIGINS", "*")
    assert set(problems()) == {"PORT", "CORS_ORIGINS"}


def test_invalid_variable_is_not_reported_twice(monkeypatch, production):
    # An invalid DATABASE_URL falls back to "unset" for the rules: it must not also be "required".
    monkeypatch.setenv("DATABASE_URL", "mysql://a3e:pw@db/a3e")
    found = problems()
    assert list(found) == ["DATABASE_URL"]
    assert "unsupported scheme" in found["DATABASE_URL"]


def test_config_error_renders_one_problem():
    error = ConfigError([ConfigProblem("PORT", "must be a whole number")])
    assert str(error).splitlines()[:2] == ["A3E cannot start: 1 configuration problem.", "  - PORT: must be a whole number"]


# ---------------------------------------------------------------------------------------------
# DATABASE_URL: every accepted spelling, the driver picked, and the password masked.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/a3e", "postgresql+psycopg://u:p@db:5432/a3e"),
        ("postgresql://u:p@db:5432/a3e", "postgresql+psycopg://u:p@db:5432/a3e"),
        ("postgresql+psycopg://u:p@db:5432/a3e", "postgresql+psycopg://u:p@db:5432/a3e"),
        ("postgresql+psycopg2://u:p@db/a3e", "postgresql+psycopg://u:p@db/a3e"),
        ("POSTGRES://u:p@db/a3e?sslmode=require", "postgresql+psycopg://u:p@db/a3e?sslmode=require"),
        ("  postgresql://db/a3e  ", "postgresql+psycopg://db/a3e"),
        ("postgresql://u:p@[::1]:5432/a3e", "postgresql+psycopg://u:p@[::1]:5432/a3e"),
        ("postgresql:///a3e", "postgresql+psycopg:///a3e"),
        ("sqlite:///data/a3e.db", "sqlite:///data/a3e.db"),
        ("sqlite:////srv/a3e/a3e.db", "sqlite:////srv/a3e/a3e.db"),
        ("sqlite+pysqlite:///a3e.db", "sqlite:///a3e.db"),
    ],
)
def test_database_url_spellings_pick_our_driver(monkeypatch, url, expected):
    assert normalize_database_url(url) == expected
    monkeypatch.setenv("DATABASE_URL", url)
    settings, found = read_settings()
    assert found == []
    assert settings.database_url == settings.sqlalchemy_url == expected
    assert settings.uses_sqlite == expected.startswith("sqlite")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://a3e:s3cret@db:5432/a3e", "postgresql+psycopg://a3e:***@db:5432/a3e"),
        ("postgresql+psycopg://a3e:p%40ss:w0rd@db/a3e", "postgresql+psycopg://a3e:***@db/a3e"),
        ("postgresql+psycopg://a3e@db/a3e", "postgresql+psycopg://a3e@db/a3e"),
        ("postgresql+psycopg://db/a3e", "postgresql+psycopg://db/a3e"),
        ("sqlite:///data/a3e.db", "sqlite:///data/a3e.db"),
    ],
)
def test_mask_database_url(url, masked):
    assert mask_database_url(url) == masked


def test_secret_values_include_every_secret_and_the_database_password(monkeypatch, production):
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_" + "k" * 8 + "123")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_abcdef")
    settings = load_settings().settings
    values = settings.secret_values()
    assert PG_PASSWORD in values
    assert production["SECRET_KEY"] in values and production["JWT_SECRET_KEY"] in values
    assert "sk_test_kkkkkkkk123" in values and "whsec_abcdef" in values
    assert PG_PASSWORD not in mask_database_url(settings.sqlalchemy_url)


def test_secret_values_without_a_database_password(monkeypatch, production):
    monkeypatch.setenv("DATABASE_URL", "postgresql://a3e@db.internal/a3e")
    values = read_settings()[0].secret_values()
    assert values == [production["SECRET_KEY"], production["JWT_SECRET_KEY"]]


# ---------------------------------------------------------------------------------------------
# CORS_ORIGINS: comma list or JSON list; spaces, trailing slashes, case and duplicates tolerated.


@pytest.mark.parametrize(
    "value",
    [
        " https://App.Example.edu/ , http://localhost:3000/,https://app.example.edu,, ",
        '["https://app.example.edu/", " HTTP://LOCALHOST:3000 ", "https://APP.example.edu"]',
        '  ["https://app.example.edu", "http://localhost:3000/"]  ',
    ],
)
def test_cors_origins_are_normalised(monkeypatch, value):
    monkeypatch.setenv("CORS_ORIGINS", value)
    settings, found = read_settings()
    assert found == []
    assert settings.cors_origins == ["https://app.example.edu", "http://localhost:3000"]


@pytest.mark.parametrize("value", ["", "   ", "[]", ","])
def test_empty_cors_origins(monkeypatch, value):
    monkeypatch.setenv("CORS_ORIGINS", value)
    settings, found = read_settings()
    assert found == []
    assert settings.cors_origins == []


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("HTTPS://App.Example.edu/", "https://app.example.edu"),
        ("https://app.example.edu:8443//", "https://app.example.edu:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("*", "*"),
    ],
)
def test_normalize_origin(origin, expected):
    assert normalize_origin(origin) == expected


def test_disabled_features_list(monkeypatch):
    monkeypatch.setenv("A3E_DISABLED_FEATURES", " Billing, ai ,,")
    assert read_settings()[0].disabled_features == ["billing", "ai"]
    monkeypatch.setenv("A3E_DISABLED_FEATURES", '["Billing"]')
    assert read_settings()[0].disabled_features == ["billing"]


# ---------------------------------------------------------------------------------------------
# Hosting platforms: their environment name means production rules, and is only reported.


@pytest.mark.parametrize("name", ["production", "staging", "pr-12", "development"])
@pytest.mark.parametrize("variable", ["RAILWAY_ENVIRONMENT", "RAILWAY_ENVIRONMENT_NAME"])
def test_railway_environment_means_production_rules(monkeypatch, production, variable, name):
    monkeypatch.delenv("ENVIRONMENT")
    monkeypatch.setenv(variable, name)
    settings, found = read_settings()
    assert found == []  # the name itself is never a reason to fail
    assert settings.is_production
    assert settings.environment_label == f"production (railway:{name})"

    # And production rules do apply: a weak secret is refused.
    monkeypatch.setenv("SECRET_KEY", "your-secret-key-here")
    assert list(problems()) == ["SECRET_KEY"]


@pytest.mark.parametrize("name", ["production", "staging", "pr-12"])
def test_railway_environment_name_is_never_an_error(monkeypatch, name):
    monkeypatch.setenv("RAILWAY_ENVIRONMENT", name)
    found = problems()
    assert set(found) == {"SECRET_KEY", "JWT_SECRET_KEY", "DATABASE_URL"}
    assert not any("railway" in message.lower() or f"'{name}'" in message for message in found.values())


@pytest.mark.parametrize(
    ("variable", "value", "label"),
    [("RENDER", "true", "render"), ("FLY_APP_NAME", "a3e-api", "fly:a3e-api"), ("DYNO", "web.1", "heroku")],
)
def test_other_platforms_mean_production(monkeypatch, production, variable, value, label):
    monkeypatch.delenv("ENVIRONMENT")
    monkeypatch.setenv(variable, value)
    settings, found = read_settings()
    assert found == []
    assert settings.environment_label == f"production ({label})"


def test_explicit_development_wins_over_the_platform(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("RAILWAY_ENVIRONMENT", "production")
    settings, found = read_settings()
    assert found == []
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.environment_label == "development"
    assert load_settings().warnings  # development: secrets generated, not refused


# ---------------------------------------------------------------------------------------------
# Empty values are unset; .env is read; real environment variables win over it.


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_values_are_unset(monkeypatch, blank):
    for name in ("ENVIRONMENT", "PORT", "SECRET_KEY", "JWT_SECRET_KEY", "CORS_ORIGINS", "DATABASE_URL",
                 "LOG_LEVEL", "LOG_FORMAT", "RAILWAY_ENVIRONMENT", "A3E_DATA_DIR", "WEB_CONCURRENCY"):
        monkeypatch.setenv(name, blank)
    settings, found = read_settings()
    assert found == []
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.environment_label == "development"
    assert (settings.port, settings.database_url, settings.secret_key, settings.log_level) == (8000, None, None, "info")
    assert settings.data_dir == Path("data")


def test_empty_secret_in_production_is_missing_not_short(monkeypatch, production):
    monkeypatch.setenv("SECRET_KEY", "")
    assert "is required in production" in problems()["SECRET_KEY"]


def test_dotenv_file_is_read(tmp_path):
    secret = strong_secret()
    (tmp_path / ".env").write_text(
        f"PORT=9001\nCORS_ORIGINS=https://app.example.edu/\nLOG_LEVEL=debug\nSECRET_KEY={secret}\n"
    )
    settings, found = read_settings()
    assert found == []
    assert settings.port == 9001
    assert settings.cors_origins == ["https://app.example.edu"]
    assert settings.log_level == "debug"
    assert settings.secret_key.get_secret_value() == secret


def test_environment_variables_win_over_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("PORT=9001\nENVIRONMENT=production\n")
    monkeypatch.setenv("PORT", "9002")
    monkeypatch.setenv("ENVIRONMENT", "development")
    settings, found = read_settings()
    assert found == []
    assert (settings.port, settings.environment) == (9002, Environment.DEVELOPMENT)


def test_dotenv_errors_are_reported_like_any_other(tmp_path):
    (tmp_path / ".env").write_text("PORT=abc\nLOG_LEVEL=loud\n")
    assert set(problems()) == {"PORT", "LOG_LEVEL"}


# ---------------------------------------------------------------------------------------------
# Development secrets: generated once, kept in the data directory, with a warning.


@pytest.fixture
def dev_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    data_dir = tmp_path / "state" / "data"
    monkeypatch.setenv("A3E_DATA_DIR", str(data_dir))
    return data_dir


def test_development_secrets_are_generated_once_and_kept(dev_data_dir):
    first = load_settings()
    path = dev_data_dir / DEV_SECRETS_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = json.loads(path.read_text())
    secret_key = first.settings.secret_key.get_secret_value()
    jwt_secret_key = first.settings.jwt_secret_key.get_secret_value()
    assert kept == {"SECRET_KEY": secret_key, "JWT_SECRET_KEY": jwt_secret_key}
    assert secret_key != jwt_secret_key
    assert secret_weakness(secret_key) is None and secret_weakness(jwt_secret_key) is None
    assert os.listdir(dev_data_dir) == [DEV_SECRETS_FILE]  # no temporary file left behind

    [warning] = first.warnings
    assert "SECRET_KEY" in warning and "JWT_SECRET_KEY" in warning
    assert str(path) in warning
    assert secret_key not in warning and jwt_secret_key not in warning

    second = load_settings()
    assert second.settings.secret_key.get_secret_value() == secret_key
    assert second.settings.jwt_secret_key.get_secret_value() == jwt_secret_key
    assert json.loads(path.read_text()) == kept


def test_only_the_missing_secret_is_generated(monkeypatch, dev_data_dir):
    mine = strong_secret()
    monkeypatch.setenv("SECRET_KEY", mine)
    loaded = load_settings()
    assert loaded.settings.secret_key.get_secret_value() == mine
    generated = loaded.settings.jwt_secret_key.get_secret_value()
    assert generated == json.loads((dev_data_dir / DEV_SECRETS_FILE).read_text())["JWT_SECRET_KEY"]
    [warning] = loaded.warnings
    assert warning.startswith("JWT_SECRET_KEY not set")
    assert "SECRET_KEY and" not in warning and mine not in warning and generated not in warning


def test_no_warning_when_both_secrets_are_set(monkeypatch, dev_data_dir):
    monkeypatch.setenv("SECRET_KEY", "dev-secret")
    monkeypatch.setenv("JWT_SECRET_KEY", "dev-jwt-secret")
    loaded = load_settings()
    assert loaded.warnings == []
    assert not dev_data_dir.exists()


def test_a_second_process_arriving_mid_write_agrees_on_one_set_of_secrets(monkeypatch, dev_data_dir):
    # Two workers starting together on a fresh data directory: the second arrives while the first is
    # still writing. Regression: the second read the empty file and failed to start.
    real_dump = json.dump
    seen_by_second: list[dict[str, str]] = []
    arrived: list[bool] = []

    def dump_while_another_process_starts(obj, handle, *args, **kwargs):
        if not arrived:
            arrived.append(True)
            seen_by_second.append(settings_module._development_secrets(dev_data_dir))
        return real_dump(obj, handle, *args, **kwargs)

    monkeypatch.setattr(settings_module.json, "dump", dump_while_another_process_starts)
    first = settings_module._development_secrets(dev_data_dir)
    assert seen_by_second == [first]
    assert json.loads((dev_data_dir / DEV_SECRETS_FILE).read_text()) == first
    assert os.listdir(dev_data_dir) == [DEV_SECRETS_FILE]


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"SECRET_KEY": "x"}', '{"SECRET_KEY": 1, "JWT_SECRET_KEY": 2}'])
def test_damaged_secrets_file_is_a_configuration_error(dev_data_dir, content):
    dev_data_dir.mkdir(parents=True)
    (dev_data_dir / DEV_SECRETS_FILE).write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [problem.variable for problem in caught.value.problems] == ["A3E_DATA_DIR"]


def test_unusable_data_dir_is_a_configuration_error(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("A3E_DATA_DIR", str(tmp_path / "a-file" / "data"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    [problem] = caught.value.problems
    assert problem.variable == "A3E_DATA_DIR"
    assert "SECRET_KEY" in problem.message  # the other way to fix it


# ---------------------------------------------------------------------------------------------
# Secrets never appear in a configuration error.


def test_secrets_never_appear_in_config_errors(monkeypatch):
    secret = "Distinctive-Weak-Secret-1"  # 25 characters: refused as too short
    jwt_secret = "Qq" * 20  # refused as repetitive
    db_password = "Distinctive-Db-Password-9"
    stripe = "sk_live_Distinctive-Stripe-Key"
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", secret)
    monkeypatch.setenv("JWT_SECRET_KEY", jwt_secret)
    monkeypatch.setenv("STRIPE_SECRET_KEY", stripe)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://a3e:{db_password}@db:notaport/a3e")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert {problem.variable for problem in caught.value.problems} == {"SECRET_KEY", "JWT_SECRET_KEY", "DATABASE_URL"}
    for text in (str(caught.value), caught.value.render(), repr(caught.value.problems)):
        for value in (secret, jwt_secret, db_password, stripe):
            assert value not in text


def test_unsupported_database_url_does_not_echo_its_password(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://a3e:Distinctive-Db-Password-9@db/a3e")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "Distinctive-Db-Password-9" not in str(caught.value)


def test_settings_repr_shows_no_secret(monkeypatch, production):
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_Distinctive-Stripe-Key")
    settings = load_settings().settings
    for text in (repr(settings), str(settings)):
        for value in (PG_PASSWORD, production["SECRET_KEY"], production["JWT_SECRET_KEY"], "sk_live_Distinctive-Stripe-Key"):
            assert value not in text
