"""Where this machine keeps the Postgres and MariaDB/MySQL server binaries, if anywhere."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path))) or (0,)


def postgres_bin_dir() -> Path | None:
    """The folder holding `initdb` and `postgres`, or None."""
    candidates: list[Path] = []
    if os.environ.get("GRADER_PG_BIN"):
        candidates.append(Path(os.environ["GRADER_PG_BIN"]))
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    for pattern in (
        "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
        "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG)
        "/opt/homebrew/opt/postgresql*/bin",  # macOS, Homebrew (Apple silicon)
        "/usr/local/opt/postgresql*/bin",  # macOS, Homebrew (Intel)
        "/Applications/Postgres.app/Contents/Versions/*/bin",
    ):
        root = Path("/")
        candidates += sorted(root.glob(pattern.lstrip("/")), key=_version_key, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


@dataclass(frozen=True)
class MysqlBinaries:
    server: Path
    installer: Path | None  # mariadb-install-db; None for Oracle MySQL (`--initialize-insecure`)


def mysql_binaries() -> MysqlBinaries | None:
    path = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/libexec"]
    )
    for name in ("mariadbd", "mysqld"):
        server = shutil.which(name, path=path)
        if not server:
            continue
        for installer in ("mariadb-install-db", "mysql_install_db"):
            found = shutil.which(installer, path=path)
            if found:
                return MysqlBinaries(Path(server), Path(found))
        if name == "mysqld":
            return MysqlBinaries(Path(server), None)
    return None


def binaries_available(kind: str) -> bool:
    return (postgres_bin_dir() if kind == "postgres" else mysql_binaries()) is not None
