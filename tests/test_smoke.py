from fastapi.testclient import TestClient

from a3e.app import create_app
from tests.conftest import wait_ready


def test_app_becomes_ready_on_each_database(make_settings, database_url):
    app = create_app(make_settings(database_url=database_url))
    with TestClient(app) as client:
        wait_ready(client)
        body = client.get("/health").json()
        assert body["checks"]["migrations"]["status"] == "ok"
