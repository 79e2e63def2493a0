"""bootstrap.py decides when to reinstall .venv/ from uv.lock, and says when the lock is stale.

Nothing here touches the network or the real .venv/: the install steps are recorded, not run,
and `uv lock --check --offline` runs on copies in a temporary folder.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"


def _load():
    spec = importlib.util.spec_from_file_location("bootstrap", REPO / "bootstrap.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bootstrap = _load()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["a"]\n')
    (tmp_path / "uv.lock").write_text('version = 1\n[[package]]\nname = "a"\nversion = "1.0"\n')
    return tmp_path


def test_fingerprint_covers_pyproject_and_lock(project: Path) -> None:
    first = bootstrap.fingerprint(project)
    assert bootstrap.fingerprint(project) == first
    (project / "uv.lock").write_text('version = 1\n[[package]]\nname = "a"\nversion = "1.1"\n')
    relocked = bootstrap.fingerprint(project)
    assert relocked != first
    (project / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["a", "b"]\n')
    assert bootstrap.fingerprint(project) not in (first, relocked)
    (project / "uv.lock").unlink()
    assert bootstrap.fingerprint(project) not in (first, relocked)


def test_needs_install_only_when_the_stamp_differs(project: Path, tmp_path: Path) -> None:
    stamp = tmp_path / "stamp"
    wanted = bootstrap.fingerprint(project)
    assert bootstrap.needs_install(stamp, wanted)  # no stamp: never installed
    stamp.write_text(wanted)
    assert not bootstrap.needs_install(stamp, wanted)
    (project / "uv.lock").write_text("version = 1\n")  # a pull brought a new lock
    assert bootstrap.needs_install(stamp, bootstrap.fingerprint(project))


class _Recorder:
    """ensure_venv with every step that would touch a real venv or the network recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, stale: bool = False) -> None:
        self.commands: list[list[str]] = []
        venv = root / ".venv"
        venv.mkdir(exist_ok=True)
        for name, value in {
            "ROOT": root,
            "VENV": venv,
            "BIN": venv / "bin",
            "STAMP": venv / ".installed",
            "LOCK": root / "uv.lock",
        }.items():
            monkeypatch.setattr(bootstrap, name, value)
        monkeypatch.setattr(bootstrap, "_create_venv", lambda: None)
        monkeypatch.setattr(bootstrap, "ensure_uv", lambda: Path("uv"))
        monkeypatch.setattr(bootstrap, "lock_is_stale", lambda uv, root, python: stale)
        monkeypatch.setattr(bootstrap, "_sh", lambda *cmd, **kw: self.commands.append(cmd))

    def synced(self) -> bool:
        return any(c[:2] == (Path("uv"), "sync") for c in self.commands)


def test_ensure_venv_reinstalls_after_the_lock_changes_and_not_before(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    rec = _Recorder(monkeypatch, project)
    bootstrap.ensure_venv()
    assert rec.synced()  # first run
    sync = next(c for c in rec.commands if c[1] == "sync")
    assert "--locked" in sync and "dev" in sync
    assert bootstrap.STAMP.read_text() == bootstrap.fingerprint(project)

    rec.commands.clear()
    bootstrap.ensure_venv()
    assert rec.commands == []  # nothing changed: nothing installed

    (project / "uv.lock").write_text('version = 1\n[[package]]\nname = "a"\nversion = "2.0"\n')
    bootstrap.ensure_venv()
    assert rec.synced()


def test_ensure_venv_refuses_a_stale_lock_and_says_how_to_update_it(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    rec = _Recorder(monkeypatch, project, stale=True)
    with pytest.raises(SystemExit) as exc:
        bootstrap.ensure_venv()
    assert "python3 bootstrap.py lock" in str(exc.value)
    assert not rec.synced()
    assert not bootstrap.STAMP.exists()


def test_ensure_venv_without_a_lock_says_how_to_write_one(
    monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    (project / "uv.lock").unlink()
    rec = _Recorder(monkeypatch, project)
    with pytest.raises(SystemExit, match=r"bootstrap\.py lock"):
        bootstrap.ensure_venv()
    assert rec.commands == []


def test_locked_version_reads_the_lock(project: Path) -> None:
    assert bootstrap.locked_version(project / "uv.lock", "a") == "1.0"
    assert bootstrap.locked_version(project / "uv.lock", "b") is None


def test_the_lock_pins_uv_and_rich() -> None:
    lock = REPO / "uv.lock"
    assert bootstrap.locked_version(lock, "uv"), "bootstrap.py installs the uv that uv.lock pins"
    assert bootstrap.locked_version(lock, "rich")


needs_uv = pytest.mark.skipif(not UV.exists(), reason="uv is not installed beside this python")


@needs_uv
def test_committed_lock_matches_pyproject() -> None:
    stale = bootstrap.lock_is_stale(UV, REPO, Path(sys.executable))
    assert not stale, "uv.lock is out of date with pyproject.toml: run `python3 bootstrap.py lock`"


@needs_uv
def test_lock_is_stale_after_a_new_dependency_offline(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    python = Path(sys.executable)
    assert not bootstrap.lock_is_stale(UV, tmp_path, python)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    assert "dependencies = [\n" in text
    pyproject.write_text(
        text.replace("dependencies = [\n", 'dependencies = [\n    "no-such-package-x9",\n', 1)
    )
    assert bootstrap.lock_is_stale(UV, tmp_path, python)
