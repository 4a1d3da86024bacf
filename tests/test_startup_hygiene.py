"""Start-up stays light and honest: importing the app does no I/O and no heavy imports, nothing
but the settings class reads the environment, and the deployment files say what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
from pathlib import Path

from a3e.core.settings import Settings
from tests.conftest import settings_env_vars

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "a3e"

IMPORT_PROBE = r"""
import sys
events = []
def hook(event, args):
    if event.startswith("socket.") or event in ("os.mkdir", "os.remove", "os.rename", "shutil.rmtree"):
        events.append(event)
    elif event == "open":
        path, mode = str(args[0]), args[1]
        if isinstance(mode, str) and any(flag in mode for flag in "wax+"):
            events.append(f"write {path}")
        elif not path.endswith((".py", ".pyc", ".so", ".pth", ".typed")) and "/__pycache__/" not in path \
                and not path.endswith(("/", "LICENSE", "METADATA", "RECORD", "entry_points.txt")) \
                and "site-packages" not in path and "/lib/python" not in path:
            events.append(f"read {path}")
sys.addaudithook(hook)
import a3e.app, a3e.cli
heavy = sorted(m for m in ("alembic", "psycopg", "uvicorn", "httpx", "a3e.ops.doctor", "a3e.ops.probe") if m in sys.modules)
print(repr((events, heavy)))
"""


def test_importing_the_app_does_no_io_and_no_heavy_imports(tmp_path):
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    events, heavy = eval(result.stdout.strip().splitlines()[-1])
    assert events == []
    assert heavy == []


def test_only_the_settings_module_reads_the_environment():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "settings.py" and path.parent.name == "core":
            continue
        text = path.read_text()
        if re.search(r"os\.environ|os\.getenv|getenv\(", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_env_example_documents_every_variable():
    documented = (ROOT / ".env.example").read_text()
    platform_names = {"RAILWAY_ENVIRONMENT_NAME", "RAILWAY_ENVIRONMENT", "RENDER", "FLY_APP_NAME", "DYNO", "A3E_WORKERS"}
    missing = sorted(name for name in settings_env_vars() - platform_names if name not in documented)
    assert missing == []
    assert len(Settings.model_fields) >= 20


def test_railway_migrates_before_deploy_and_checks_readiness():
    config = tomllib.loads((ROOT / "railway.toml").read_text())
    deploy = config["deploy"]
    assert deploy["healthcheckPath"] == "/health/ready"
    assert deploy["preDeployCommand"] == ["a3e migrate"]
    assert deploy["startCommand"] == "a3e serve"  # binds 0.0.0.0:$PORT by default
    assert deploy["restartPolicyType"] == "ON_FAILURE"


def test_procfile_and_dockerfile():
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line)
    assert procfile == {"release": "a3e migrate", "web": "a3e serve"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    user_lines = [line for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1] not in ("USER root", "USER 0")
    assert "/health/ready" in dockerfile


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    head = readme[:1500]
    assert "./scripts/serve" in head and "./scripts/test" in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


def test_no_shipped_file_is_git_ignored():
    """An ignored file under src/ works here and is missing from every clean clone (CI, deploys):
    the password list once was, through a `data/` rule meant for the local data directory."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src" / "a3e").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc")
    ]
    ignored = subprocess.run(["git", "check-ignore", *files], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == "", f"git ignores shipped files:\n{ignored.stdout}"
    assert any(name.endswith("common-passwords.txt.gz") for name in files)
