"""docker-compose.yml is valid, and its base services are the ones the README promises.

Needs only the `docker-compose` client (Debian's package), not a Docker engine: `config` parses,
validates and interpolates the file without starting anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> list[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(
                "docker-compose is not installed; CI must have it (.ci/run installs Debian's "
                "docker-compose package)",
                pytrace=False,
            )
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return [exe, "-f", str(COMPOSE_FILE)]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    # A developer's shell may set these; the file's defaults are what is under test.
    env = {k: v for k, v in os.environ.items() if k not in ("CHAPTER", "DATABASE_URL")}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_compose_file_is_valid(compose: list[str]) -> None:
    proc = _run([*compose, "config", "-q"])
    assert proc.returncode == 0, f"docker-compose config -q failed:\n{proc.stderr}"


def test_compose_has_the_backend_and_the_frontend(compose: list[str]) -> None:
    proc = _run([*compose, "config", "--services"])
    assert proc.returncode == 0, proc.stderr
    services = set(proc.stdout.split())
    assert {"backend", "frontend"} <= services, services


def test_compose_runs_an_existing_chapter_by_default(compose: list[str]) -> None:
    proc = _run([*compose, "config"])
    assert proc.returncode == 0, proc.stderr
    # The default CHAPTER must be a chapter folder that exists, for both services.
    folders = {part.split("/")[1] for part in proc.stdout.split() if part.startswith("chapters/")}
    assert folders, "no chapters/ path in the compose file's commands"
    for folder in folders:
        assert (ROOT / "solutions" / folder).is_dir(), (
            f"chapters/{folder}: no such chapter (solutions/{folder} is missing)"
        )
