"""Optional features are isolated: disabled, unconfigured or broken, the app still starts, the
feature's endpoints answer 503 `feature_unavailable` with the reason, and /health shows it."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from a3e.app import create_app
from a3e.core.features import Feature
from tests.conftest import wait_ready
from tests.fake_features import widgets

WIDGETS = Feature(
    name="widgets",
    title="Widgets",
    required_settings=("stripe_secret_key",),
    routers="tests.fake_features.widgets:router",
    paths=("/api/v1/widgets",),
    init="tests.fake_features.widgets:init",
)
BROKEN = Feature(
    name="broken", title="Broken feature", routers="tests.fake_features.broken:router", paths=("/api/v1/broken",)
)


@contextmanager
def run(make_settings, database_url, features, **settings):
    app = create_app(make_settings(database_url=database_url, **settings), features=features)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def feature_health(client: TestClient, name: str) -> dict:
    return client.get("/health").json()["features"][name]


def assert_unavailable(response, feature: str, status: str, reason_contains: str) -> None:
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "feature_unavailable"
    assert error["details"] == {"feature": feature, "status": status}
    assert reason_contains in error["message"]


def test_configured_feature_is_mounted_and_initialised(make_settings, database_url):
    widgets.started_with.clear()
    with run(make_settings, database_url, [WIDGETS], stripe_secret_key="sk_test_" + "a" * 24) as client:
        assert client.get("/api/v1/widgets").json() == {"widgets": ["sprocket"]}
        assert client.post("/api/v1/widgets/w1/spin").json() == {"spun": "w1"}
        assert feature_health(client, "widgets")["status"] == "enabled"
        assert len(widgets.started_with) == 1


def test_disabled_feature_answers_503_and_the_rest_works(make_settings, database_url):
    with run(
        make_settings, database_url, [WIDGETS], stripe_secret_key="sk_test_" + "a" * 24, disabled_features=["widgets"]
    ) as client:
        for method, path in (("GET", "/api/v1/widgets"), ("POST", "/api/v1/widgets/w1/spin")):
            assert_unavailable(client.request(method, path), "widgets", "disabled", "A3E_DISABLED_FEATURES")
        assert feature_health(client, "widgets") == {
            "status": "disabled", "title": "Widgets", "reason": "disabled by A3E_DISABLED_FEATURES"
        }
        assert client.get("/health/ready").status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def test_unconfigured_feature_names_the_missing_variable(make_settings, database_url):
    with run(make_settings, database_url, [WIDGETS]) as client:
        assert_unavailable(client.get("/api/v1/widgets"), "widgets", "not_configured", "STRIPE_SECRET_KEY")
        assert feature_health(client, "widgets")["status"] == "not_configured"
        assert client.get("/health").json()["status"] == "ok"  # optional and unconfigured is fine


def test_feature_whose_module_fails_to_import(make_settings, database_url):
    with run(make_settings, database_url, [BROKEN, WIDGETS], stripe_secret_key="sk_test_" + "a" * 24) as client:
        assert_unavailable(client.get("/api/v1/broken/anything"), "broken", "failed", "a3e_module_that_does_not_exist")
        health = client.get("/health")
        assert health.status_code == 200  # still ready: the core is fine
        assert health.json()["status"] == "degraded"
        assert health.json()["features"]["broken"]["status"] == "failed"
        assert "ModuleNotFoundError" in health.json()["features"]["broken"]["reason"]
        # The broken feature does not take the others down.
        assert client.get("/api/v1/widgets").status_code == 200


def test_feature_whose_initialiser_fails(make_settings, database_url):
    failing = Feature(
        name="widgets", title="Widgets", routers="tests.fake_features.widgets:router",
        paths=("/api/v1/widgets",), init="tests.fake_features.widgets:init_that_fails",
    )
    with run(make_settings, database_url, [failing]) as client:
        assert_unavailable(client.get("/api/v1/widgets"), "widgets", "failed", "could not reach the widget service")


def test_feature_validation_and_health_check(make_settings, database_url):
    checked = Feature(
        name="widgets", title="Widgets", routers="tests.fake_features.widgets:router", paths=("/api/v1/widgets",),
        validate=lambda s: None if s.stripe_secret_key else "needs a key of the right shape",
        health=lambda app: "the widget queue is stuck",
    )
    with run(make_settings, database_url, [checked]) as client:
        assert_unavailable(client.get("/api/v1/widgets"), "widgets", "not_configured", "right shape")
    with run(make_settings, database_url, [checked], stripe_secret_key="sk_test_" + "a" * 24) as client:
        assert client.get("/api/v1/widgets").status_code == 200
        assert feature_health(client, "widgets") == {
            "status": "failed", "title": "Widgets", "reason": "the widget queue is stuck"
        }


def test_a_fenced_feature_never_shadows_health(make_settings, database_url):
    greedy = Feature(name="greedy", title="Greedy", routers="tests.fake_features.broken:router", paths=("/",))
    with run(make_settings, database_url, [greedy]) as client:
        assert client.get("/health/live").status_code == 200
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("features", [None, []])
def test_the_builtin_registry_loads(make_settings, database_url, features):
    with run(make_settings, database_url, features) as client:
        assert client.get("/health").status_code == 200
