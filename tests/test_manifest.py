"""The manifest validator: a bad `workbook.toml` is rejected with a message naming the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from grader import REPO_ROOT
from grader.manifest import MANIFEST_PATH, ManifestError, load, parse


def valid() -> dict[str, Any]:
    """A small, valid workbook: two chapters, an exercise depending on another, a demo."""
    return {
        "format_version": 1,
        "docs_url": "http://127.0.0.1:8001",
        "chapters": [
            {
                "number": 1,
                "slug": "01-first",
                "title": "First",
                "docs": "chapters/01-first.md",
                "milestones": [
                    {"id": "1.1", "title": "a", "kind": "exercise", "hint": "h", "docs": "d#a"},
                    {
                        "id": "1.2",
                        "title": "b",
                        "kind": "exercise",
                        "hint": "h",
                        "docs": "d#b",
                        "depends": ["1.1"],
                        "todos": ["1.2"],
                    },
                ],
            },
            {
                "number": 2,
                "slug": "02-second",
                "title": "Second",
                "docs": "chapters/02-second.md",
                "databases": ["sqlite", "postgres"],
                "milestones": [
                    {"id": "2.1", "title": "c", "kind": "exercise", "hint": "h", "docs": "d#c"},
                    {
                        "id": "2.2",
                        "title": "d",
                        "kind": "demo",
                        "lesson": "memory is not shared",
                        "hint": "h",
                        "docs": "d#d",
                        "depends": ["2.1"],
                    },
                ],
            },
        ],
    }


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    for slug in ("01-first", "02-second"):
        (tmp_path / "solutions" / slug).mkdir(parents=True)
    return tmp_path


def test_a_valid_workbook_loads(root: Path) -> None:
    m = parse(valid(), root=root)
    assert [c.slug for c in m.chapters] == ["01-first", "02-second"]
    assert m.chapters[0].databases == ("sqlite",)
    assert m.chapters[1].databases == ("sqlite", "postgres")
    first = m.milestone("1.2")
    assert first.depends == ("1.1",) and first.todos == ("1.2",)
    assert first.chapter == 1
    demo = m.milestone("2.2")
    assert demo.kind == "demo" and demo.lesson == "memory is not shared"
    assert m.docs_link("chapters/01-first.md#the-backend") == (
        "http://127.0.0.1:8001/chapters/01-first/#the-backend"
    )
    assert m.docs_link("guides/db.md") == "http://127.0.0.1:8001/guides/db/"
    with pytest.raises(KeyError, match="no chapter 7"):
        m.chapter(7)
    with pytest.raises(KeyError):
        m.milestone("1.9")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation: set (or, for value DELETE, remove) `chapters.0.milestones.1.kind`."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = data
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


DELETE = object()
M0 = "chapters.0.milestones.0"
M1 = "chapters.0.milestones.1"
D1 = "chapters.1.milestones.1"

BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    # top level
    ("no format_version", _set("format_version", DELETE), "(top level).format_version is missing"),
    ("format_version 2", _set("format_version", 2), "format_version 2 is not supported"),
    ("format_version str", _set("format_version", "1"), "(top level).format_version must be a"),
    ("no docs_url", _set("docs_url", DELETE), "(top level).docs_url is missing"),
    ("unknown top field", _set("docs_ur1", "x"), "(top level) has unknown field(s) ['docs_ur1']"),
    ("no chapters", _set("chapters", DELETE), "(top level).chapters is missing"),
    ("chapters not a list", _set("chapters", {"number": 1}), "(top level).chapters must be a"),
    ("empty chapters", _set("chapters", []), "chapters is empty"),
    # chapters
    ("chapter not a table", _set("chapters.0", "01-first"), "chapters[0] must be a table"),
    ("chapter number missing", _set("chapters.0.number", DELETE), "chapters[0].number is missing"),
    ("chapter number bool", _set("chapters.0.number", True), "chapters[0].number must be a"),
    ("chapter number str", _set("chapters.1.number", "2"), "chapters[1].number must be a"),
    ("chapters out of order", _set("chapters.1.number", 3), "chapters[1].number must be 2"),
    ("slug missing", _set("chapters.0.slug", DELETE), "chapters[0].slug is missing"),
    ("slug without number", _set("chapters.0.slug", "first"), "chapters[0].slug must look like"),
    ("slug wrong number", _set("chapters.1.slug", "01-second"), "chapters[1].slug must look like"),
    ("slug upper case", _set("chapters.0.slug", "01-First"), "chapters[0].slug must look like"),
    ("slug no solution", _set("chapters.0.slug", "01-elsewhere"), "solutions/01-elsewhere/"),
    ("chapter title missing", _set("chapters.1.title", DELETE), "chapters[1].title is missing"),
    ("chapter docs missing", _set("chapters.0.docs", DELETE), "chapters[0].docs is missing"),
    ("chapter docs wrong type", _set("chapters.0.docs", 1), "chapters[0].docs must be a"),
    ("unknown database", _set("chapters.1.databases", ["oracle"]), "chapters[1].databases"),
    ("databases not a list", _set("chapters.1.databases", "mysql"), "chapters[1].databases must"),
    ("unknown chapter field", _set("chapters.1.databse", ["mysql"]), "chapters[1] has unknown"),
    ("no milestones", _set("chapters.0.milestones", DELETE), "chapters[0].milestones is missing"),
    # milestones
    ("milestone not a table", _set(M1, "1.2"), "chapters[0].milestones[1] must be a table"),
    ("id missing", _set(f"{M0}.id", DELETE), "chapters[0].milestones[0].id is missing"),
    ("id of another chapter", _set(f"{M0}.id", "2.1"), "chapters[0].milestones[0].id must look"),
    ("id not N.M", _set(f"{M1}.id", "1-2"), "chapters[0].milestones[1].id must look like '1.N'"),
    ("title missing", _set(f"{M1}.title", DELETE), "chapters[0].milestones[1].title is missing"),
    ("title not a string", _set(f"{M1}.title", 12), "chapters[0].milestones[1].title must be a"),
    ("hint missing", _set(f"{M0}.hint", DELETE), "chapters[0].milestones[0].hint is missing"),
    ("docs missing", _set(f"{M0}.docs", DELETE), "chapters[0].milestones[0].docs is missing"),
    ("kind missing", _set(f"{M1}.kind", DELETE), "chapters[0].milestones[1].kind is missing"),
    ("bad kind", _set(f"{M1}.kind", "quiz"), "chapters[0].milestones[1].kind must be one of"),
    ("demo without lesson", _set(f"{D1}.lesson", DELETE), "chapters[1].milestones[1].lesson"),
    ("demo empty lesson", _set(f"{D1}.lesson", ""), "chapters[1].milestones[1].lesson"),
    ("demo with todos", _set(f"{D1}.todos", ["2.2"]), "chapters[1].milestones[1].todos must"),
    ("depends not a list", _set(f"{M1}.depends", "1.1"), "chapters[0].milestones[1].depends must"),
    ("depends not str", _set(f"{M1}.depends", [1.1]), "chapters[0].milestones[1].depends[0]"),
    ("todos not str", _set(f"{M1}.todos", [1]), "chapters[0].milestones[1].todos[0] must be"),
    ("depends unknown", _set(f"{M1}.depends", ["1.9"]), "milestones[1].depends names '1.9'"),
    ("depends on later", _set(f"{M0}.depends", ["1.2"]), "milestones[0].depends names '1.2'"),
    ("depends on itself", _set(f"{M1}.depends", ["1.2"]), "milestones[1].depends names '1.2'"),
    ("duplicate id", _set(f"{M1}.id", "1.1"), "chapters[0].milestones[1].id '1.1' is already"),
    ("unknown field", _set(f"{M0}.hnit", "x"), "chapters[0].milestones[0] has unknown field"),
]


@pytest.mark.parametrize(("mutate", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_workbook_is_rejected(
    root: Path, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    data = copy.deepcopy(valid())
    mutate(data)
    with pytest.raises(ManifestError) as exc:
        parse(data, root=root)
    assert message in str(exc.value)
    assert str(exc.value).startswith("workbook.toml:")


def test_a_duplicate_id_names_both_places(root: Path) -> None:
    data = valid()
    data["chapters"][1]["milestones"][1]["id"] = "2.1"
    with pytest.raises(ManifestError) as exc:
        parse(data, root=root)
    assert "chapters[1].milestones[1].id '2.1' is already used by chapters[1].milestones[0]" in str(
        exc.value
    )


def test_a_wrong_kind_names_the_choices(root: Path) -> None:
    data = valid()
    data["chapters"][0]["milestones"][1]["kind"] = "quiz"
    with pytest.raises(ManifestError, match=r"'exercise', 'demo'.*got 'quiz'"):
        parse(data, root=root)


TOML = """
format_version = 1
docs_url = "http://127.0.0.1:8001"

[[chapters]]
number = 1
slug = "01-first"
title = "First"
docs = "chapters/01-first.md"

[[chapters.milestones]]
id = "1.1"
title = "a"
kind = "exercise"
hint = "h"
docs = "d#a"
"""


def test_load_reads_toml_beside_its_solutions(root: Path) -> None:
    path = root / "workbook.toml"
    path.write_text(TOML, encoding="utf-8")
    manifest = load(path)
    assert manifest.chapter(1).milestone("1.1").title == "a"


def test_load_rejects_invalid_toml(root: Path) -> None:
    path = root / "workbook.toml"
    path.write_text(TOML.replace('title = "a"', "title = a"), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"workbook\.toml is not valid TOML.*line 13"):
        load(path)


def test_load_says_when_the_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        load(tmp_path / "workbook.toml")


def test_the_real_workbook_loads() -> None:
    manifest = load()
    assert MANIFEST_PATH == REPO_ROOT / "workbook.toml"
    assert [c.number for c in manifest.chapters] == list(range(1, len(manifest.chapters) + 1))
    assert manifest.chapter(1).slug == "01-baseline"
    assert [m.id for m in manifest.chapter(1).milestones] == ["1.1", "1.2", "1.3", "1.4"]
    assert manifest.milestone("1.4").todos == ("1.4",)
    for chapter in manifest.chapters:
        assert (REPO_ROOT / "solutions" / chapter.slug).is_dir()
        assert chapter.milestones, f"chapter {chapter.number} has no milestones"
        for m in chapter.milestones:
            assert m.hint and ".md" in m.docs
            assert m.kind == "exercise" or m.lesson
