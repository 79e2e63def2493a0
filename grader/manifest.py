"""Load and validate `workbook.toml`, the one place that lists chapters and milestones."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import REPO_ROOT

FORMAT_VERSION = 1
KINDS = ("exercise", "demo")
DATABASE_KINDS = ("sqlite", "postgres", "mysql")
MANIFEST_PATH = REPO_ROOT / "workbook.toml"


class ManifestError(ValueError):
    """`workbook.toml` is malformed; the message names the field at fault."""


@dataclass(frozen=True)
class Milestone:
    id: str
    title: str
    kind: str
    hint: str  # code-level: shown only by `grader hint N.M`
    docs: str
    depends: tuple[str, ...] = ()
    todos: tuple[str, ...] = ()
    lesson: str = ""
    nudge: str = ""  # one conceptual line, printed under a failure

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])


@dataclass(frozen=True)
class Chapter:
    number: int
    slug: str
    title: str
    docs: str
    databases: tuple[str, ...]
    milestones: tuple[Milestone, ...] = field(default_factory=tuple)

    def milestone(self, milestone_id: str) -> Milestone:
        for m in self.milestones:
            if m.id == milestone_id:
                return m
        raise KeyError(milestone_id)

    def with_dependencies(self, milestone_ids: list[str]) -> set[str]:
        """`milestone_ids` and every milestone they depend on, directly or through others."""
        wanted = set(milestone_ids)
        for m in reversed(self.milestones):  # a dependency is listed before what needs it
            if m.id in wanted:
                wanted.update(m.depends)
        return wanted


@dataclass(frozen=True)
class Manifest:
    format_version: int
    docs_url: str
    chapters: tuple[Chapter, ...]

    def chapter(self, number: int) -> Chapter:
        for c in self.chapters:
            if c.number == number:
                return c
        known = ", ".join(str(c.number) for c in self.chapters)
        raise KeyError(f"there is no chapter {number}; the chapters are {known}")

    def milestone(self, milestone_id: str) -> Milestone:
        chapter = self.chapter(int(milestone_id.split(".")[0]))
        return chapter.milestone(milestone_id)

    def docs_link(self, anchor: str) -> str:
        """`chapters/03-x.md#milestones` -> the served page URL, as `mkdocs serve` shows it."""
        page, _, fragment = anchor.partition("#")
        url = f"{self.docs_url.rstrip('/')}/{page.removesuffix('.md')}/"
        return f"{url}#{fragment}" if fragment else url


def _get(table: dict[str, Any], key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ManifestError(f"workbook.toml: {where}.{key} is missing")
        return default
    value = table[key]
    # bool is an int in Python; a milestone number of `true` is still a mistake.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(
            f"workbook.toml: {where}.{key} must be a {kind.__name__}, got {value!r}"
        )
    return value


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = _get(table, key, list, where, [])
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ManifestError(f"workbook.toml: {where}.{key}[{i}] must be a string, got {v!r}")
    return tuple(values)


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise ManifestError(f"workbook.toml: {where} has unknown field(s) {sorted(unknown)}")


def _milestone(raw: Any, where: str, chapter: int) -> Milestone:
    if not isinstance(raw, dict):
        raise ManifestError(f"workbook.toml: {where} must be a table")
    mid = _get(raw, "id", str, where)
    if not re.fullmatch(rf"{chapter}\.\d+", mid):
        raise ManifestError(
            f"workbook.toml: {where}.id must look like '{chapter}.N' in chapter {chapter}, "
            f"got {mid!r}"
        )
    kind = _get(raw, "kind", str, where)
    if kind not in KINDS:
        raise ManifestError(f"workbook.toml: {where}.kind must be one of {KINDS}, got {kind!r}")
    milestone = Milestone(
        id=mid,
        title=_get(raw, "title", str, where),
        kind=kind,
        hint=_get(raw, "hint", str, where),
        docs=_get(raw, "docs", str, where),
        depends=_strings(raw, "depends", where),
        todos=_strings(raw, "todos", where),
        lesson=_get(raw, "lesson", str, where, ""),
        nudge=_get(raw, "nudge", str, where, ""),
    )
    if kind == "demo" and not milestone.lesson:
        raise ManifestError(f"workbook.toml: {where}.lesson is missing (every demo teaches one)")
    if kind == "demo" and milestone.todos:
        raise ManifestError(f"workbook.toml: {where}.todos must be empty for a demo")
    known = {"id", "title", "kind", "hint", "nudge", "docs", "depends", "todos", "lesson"}
    unknown = set(raw) - known
    if unknown:
        raise ManifestError(f"workbook.toml: {where} has unknown field(s) {sorted(unknown)}")
    return milestone


def parse(data: dict[str, Any], root: Path = REPO_ROOT) -> Manifest:
    version = _get(data, "format_version", int, "(top level)")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"workbook.toml: format_version {version} is not supported (this grader reads "
            f"{FORMAT_VERSION}); update the grader or the manifest"
        )
    docs_url = _get(data, "docs_url", str, "(top level)")
    _no_unknown(data, {"format_version", "docs_url", "chapters"}, "(top level)")
    chapters: list[Chapter] = []
    seen_ids: dict[str, str] = {}
    for ci, raw in enumerate(_get(data, "chapters", list, "(top level)")):
        where = f"chapters[{ci}]"
        if not isinstance(raw, dict):
            raise ManifestError(f"workbook.toml: {where} must be a table")
        number = _get(raw, "number", int, where)
        _no_unknown(raw, {"number", "slug", "title", "docs", "databases", "milestones"}, where)
        if number != ci + 1:
            raise ManifestError(
                f"workbook.toml: {where}.number must be {ci + 1} (chapters are listed in order)"
            )
        slug = _get(raw, "slug", str, where)
        if not re.fullmatch(rf"{number:02d}-[a-z0-9-]+", slug):
            raise ManifestError(
                f"workbook.toml: {where}.slug must look like '{number:02d}-some-words', got {slug!r}"
            )
        if not (root / "solutions" / slug).is_dir():
            raise ManifestError(f"workbook.toml: {where}.slug: solutions/{slug}/ does not exist")
        databases = _strings(raw, "databases", where) or ("sqlite",)
        for db in databases:
            if db not in DATABASE_KINDS:
                raise ManifestError(
                    f"workbook.toml: {where}.databases: unknown database {db!r} "
                    "(sqlite, postgres or mysql)"
                )
        milestones = []
        for mi, mraw in enumerate(_get(raw, "milestones", list, where)):
            m = _milestone(mraw, f"{where}.milestones[{mi}]", number)
            if m.id in seen_ids:
                raise ManifestError(
                    f"workbook.toml: {where}.milestones[{mi}].id {m.id!r} is already used "
                    f"by {seen_ids[m.id]}"
                )
            for dep in m.depends:
                if dep not in seen_ids:
                    raise ManifestError(
                        f"workbook.toml: {where}.milestones[{mi}].depends names {dep!r}, which "
                        "is not a milestone listed before it"
                    )
            seen_ids[m.id] = f"{where}.milestones[{mi}]"
            milestones.append(m)
        for key in ("docs",):
            _get(raw, key, str, where)
        chapters.append(
            Chapter(
                number=number,
                slug=slug,
                title=_get(raw, "title", str, where),
                docs=raw["docs"],
                databases=databases,
                milestones=tuple(milestones),
            )
        )
    if not chapters:
        raise ManifestError("workbook.toml: chapters is empty")
    return Manifest(format_version=version, docs_url=docs_url, chapters=tuple(chapters))


def load(path: Path = MANIFEST_PATH) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} not found: run the grader from the workbook folder") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path.name} is not valid TOML: {exc}") from None
    return parse(data, root=path.parent)
