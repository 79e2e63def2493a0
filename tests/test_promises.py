"""Every promise the texts make resolves: the docs and READMEs name only what exists.

The texts are every page under docs/ (but docs/assets/), README.md, CONTRIBUTING.md and the
chapter READMEs of solutions/ (chapters/*/README.md are generated copies of them). In them:

- **chapters**: "chapter N", "chapters N and M", "chapters N–M" and a folder name `NN-slug` name
  a chapter that workbook.toml lists (under chapters/ or solutions/, with its exact slug);
  "milestone N.M" and "demo N.M" name a milestone it lists;
- **grader commands**: in code (a `code span` or a shell block), `grader X Y --opt` uses only
  subcommands and options that `grader --help` lists (read from `grader.cli.build_parser()`,
  level by level), a chapter number that exists and, for `grader hint`, a milestone that exists;
- **providers**: every `ASSISTANT_PROVIDER` value, and every model vendor named in a paragraph
  that mentions `ASSISTANT_PROVIDER`, is a provider `assistant/` accepts (`PROVIDERS`);
- **links**: a relative Markdown link resolves to a file, a link to the docs site
  (http://127.0.0.1:8001/page/) to a page under docs/, and a repository path in a code span
  (`docs/…`, `notebooks/…`, `solutions/…`, …) to a file or folder that exists.

The one exception is a **plan**. Work that does not exist yet (a future chapter, a provider not
written yet) may be named only inside a section whose heading starts with "What comes next"
(any level; it runs to the next heading of the same or a higher level), and the section must say
"planned" in its text, so a reader sees it is a plan and not a promise. Commands, links and paths
are checked there too: a plan describes, it never tells you to run something that isn't there.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from assistant.providers import PROVIDERS
from grader.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCS_SITE = re.compile(r"https?://(?:127\.0\.0\.1|localhost):8001(/[^\s)>`\"']*)?")

MANIFEST = tomllib.loads((ROOT / "workbook.toml").read_text(encoding="utf-8"))
CHAPTERS = {c["number"]: c["slug"] for c in MANIFEST["chapters"]}
MILESTONES = {m["id"] for c in MANIFEST["chapters"] for m in c.get("milestones", [])}


def texts() -> list[Path]:
    pages = [p for p in DOCS.rglob("*.md") if "assets" not in p.relative_to(DOCS).parts]
    readmes = sorted((ROOT / "solutions").glob("*/README.md"))
    return [*sorted(pages), ROOT / "README.md", ROOT / "CONTRIBUTING.md", *readmes]


# --- reading a Markdown text -------------------------------------------------------------------

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*\{?[ \t]*\.?([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$")
PLANNED_HEADING = re.compile(r"^what comes next\b", re.IGNORECASE)
SHELL = {"bash", "sh", "shell", "console", "zsh", ""}


@dataclass
class Line:
    number: int
    text: str
    lang: str | None  # the fenced block's language, None outside a fence
    section: int | None  # the heading line of the "What comes next" section holding it

    @property
    def planned(self) -> bool:
        return self.section is not None


def read_lines(text: str) -> list[Line]:
    """Each line, with the fence it is in and whether a planned section holds it."""
    out: list[Line] = []
    fence: str | None = None
    lang: str | None = None
    planned: tuple[int, int] | None = None  # (heading level, heading line)
    for number, raw in enumerate(text.splitlines(), start=1):
        if fence is None:
            m = FENCE.match(raw)
            if m:
                fence, lang = m[1], m[2].lower()
                out.append(Line(number, "", lang, planned and planned[1]))
                continue
            h = HEADING.match(raw)
            if h:
                level = len(h[1])
                if planned is not None and level <= planned[0]:
                    planned = None
                if PLANNED_HEADING.match(h[2]):
                    planned = (level, number)
            out.append(Line(number, raw, None, planned and planned[1]))
        else:
            if re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", raw):
                fence, lang = None, None
                out.append(Line(number, "", None, planned and planned[1]))
            else:
                out.append(Line(number, raw, lang, planned and planned[1]))
    return out


def planned_sections(lines: list[Line]) -> dict[int, str]:
    """The text of every planned section, by its heading's line."""
    sections: dict[int, list[str]] = {}
    for line in lines:
        if line.section is not None:
            sections.setdefault(line.section, []).append(line.text)
    return {n: "\n".join(body) for n, body in sections.items()}


CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def code_of(line: Line) -> list[str]:
    """The code on a line: the whole line in a shell block, else its code spans."""
    if line.lang is not None and line.lang in SHELL:
        return [re.sub(r"(^|\s)#.*$", "", line.text)]  # a shell comment is prose
    return [m[2] for m in CODE_SPAN.finditer(line.text)]


# --- the rules -----------------------------------------------------------------------------------

CHAPTER_REF = re.compile(
    r"\bchapters?\s+(\d+)((?:\s*(?:,|and|or|to|through|–|—|-)\s*\d+\b)*)", re.IGNORECASE
)
FOLDER_REF = re.compile(
    r"(?<![\w-])(?:(chapters|solutions)/)?(\d\d)-([a-z][a-z0-9]*(?:-[a-z0-9]+)*|…)"
)
MILESTONE_REF = re.compile(r"\b(?:milestones?|demos?)\s+(\d+\.\d+)\b", re.IGNORECASE)


def chapter_problems(line: Line) -> list[str]:
    problems = []
    for m in CHAPTER_REF.finditer(line.text):
        numbers = [int(m[1]), *map(int, re.findall(r"\d+", m[2]))]
        if re.search(r"to|through|–|—|-", m[2] or "") and len(numbers) == 2:
            numbers = list(range(numbers[0], numbers[1] + 1))
        missing = [n for n in numbers if n not in CHAPTERS]
        if missing:
            problems.append(f"{m[0]!r} names chapter {missing[0]}, which workbook.toml lacks")
    for m in FOLDER_REF.finditer(line.text):
        number, slug = int(m[2]), m[3]
        if number not in CHAPTERS:
            problems.append(f"{m[0]!r} names chapter folder {m[2]}-…, which workbook.toml lacks")
        elif m[1] and slug != "…" and f"{m[2]}-{slug}" != CHAPTERS[number]:
            problems.append(f"{m[0]!r}: chapter {number}'s folder is {CHAPTERS[number]}")
    for m in MILESTONE_REF.finditer(line.text):
        if m[1] not in MILESTONES:
            problems.append(f"{m[0]!r} names a milestone workbook.toml lacks")
    return problems


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    return [
        a.dest
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


# `grader` where a command starts: a code span or shell line, after `&&`, `;`, `$`, `-m`, or as
# the last part of a path (`.venv/bin/grader`). "what the grader did" is prose, not a command.
GRADER_CALL = re.compile(
    r"(?:^\s*|(?:&&|;|\|\||\$|-m)\s+)(?:\S*/)?grader(?=\s|$)((?:[ \t]+[^\s|;&()]+)*)"
)
PLACEHOLDER_WORD = re.compile(r"^(?:[A-Z][A-Z0-9_]*|\[.*|<.*|.*….*)$")


def grader_problems(code: str, parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with each `grader …` command in `code`."""
    problems = []
    for m in GRADER_CALL.finditer(code):
        words = m[1].split()
        current, path, positionals = parser, ["grader"], 0
        for word in words:
            if word.startswith("-"):
                option = word.split("=", 1)[0]
                if option not in _options(current):
                    problems.append(f"`{' '.join(path)}` has no option {option}")
                continue
            sub = _subcommands(current)
            if sub and PLACEHOLDER_WORD.match(word):
                break  # `grader COMMAND --help`, `grader db …`: any subcommand
            if sub:
                if word not in sub:
                    problems.append(f"`{' '.join(path)} {word}`: no such subcommand")
                    break
                current, path, positionals = sub[word], [*path, word], 0
                continue
            names = _positionals(current)
            name = names[positionals] if positionals < len(names) else None
            positionals += 1
            if name == "chapter" and word.isdigit() and int(word) not in CHAPTERS:
                problems.append(f"`{' '.join(path)} {word}`: workbook.toml has no chapter {word}")
            if name == "milestone" and re.fullmatch(r"\d+\.\d+", word) and word not in MILESTONES:
                problems.append(f"`{' '.join(path)} {word}`: no such milestone")
    return problems


PROVIDER_VALUE = re.compile(r"ASSISTANT_PROVIDER\s*=\s*([A-Za-z0-9_|,-]+)(?:`?\s+or\s+`?(\w+))?")
VENDORS = re.compile(
    r"\b(gemini|openai|anthropic|claude|ollama|mistral|vertex|azure|bedrock|groq)\b",
    re.IGNORECASE,
)


def provider_problems(paragraph: str) -> list[str]:
    if "ASSISTANT_PROVIDER" not in paragraph:
        return []
    named = set()
    for m in PROVIDER_VALUE.finditer(paragraph):
        named |= {v for v in re.split(r"[|,]", m[1]) if v}
        if m[2]:
            named.add(m[2])
    named |= {v.lower() for v in VENDORS.findall(paragraph)}
    return [
        f"ASSISTANT_PROVIDER={name!r}: assistant/ accepts only {sorted(PROVIDERS)}"
        for name in sorted(named)
        if name.lower() not in PROVIDERS
    ]


MD_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:docs|notebooks|solutions|chapters|tests|grader|assistant|benchmarks)"
    r"/[\w./-]*)"
)
PLACEHOLDER = re.compile(r"NN|SLUG|\bN\b|[<{*]|…|\.\.\.")


def docs_page(path: str) -> Path | None:
    """The docs/ file a site path (`/chapters/01-baseline/`) is built from, if any."""
    stem = path.split("#", 1)[0].strip("/")
    for candidate in (DOCS / f"{stem}.md", DOCS / stem / "index.md"):
        if stem and candidate.is_file():
            return candidate
    return DOCS / "index.md" if not stem else None


def link_problems(source: Path, line: Line) -> list[str]:
    problems = []
    if line.lang is None:
        for m in MD_LINK.finditer(CODE_SPAN.sub("", line.text)):  # a link in code is an example
            target = m[1].split("#", 1)[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            if not (source.parent / target).resolve().exists():
                problems.append(f"the link {m[1]!r} leads nowhere")
    for m in DOCS_SITE.finditer(line.text):
        if PLACEHOLDER.search(m[0]):
            continue  # `http://127.0.0.1:8001/…`: any page
        if docs_page(m[1] or "/") is None:
            problems.append(f"{m[0]!r} is no page of the docs site (docs/{m[1]}.md)")
    for code in code_of(line):
        for m in REPO_PATH.finditer(code):
            path = m[1].rstrip(".")
            if PLACEHOLDER.search(path) or path.endswith(".db"):
                continue  # a pattern (`chapters/NN-slug/`), or a file the app creates
            source = "solutions/" + path.removeprefix("chapters/")  # chapters/ is generated
            if not (ROOT / path).exists() and not (ROOT / source).exists():
                problems.append(f"`{m[1]}` does not exist")
    return problems


def promise_problems(path: Path) -> list[str]:
    """Every broken promise in the text at `path`, as `file:line: what`."""
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(ROOT)
    parser = build_parser()
    problems = []
    lines = read_lines(text)
    for line in lines:
        found = link_problems(path, line)
        for code in code_of(line):
            found += grader_problems(code, parser)
        if not line.planned:
            found += chapter_problems(line)
        problems += [f"{rel}:{line.number}: {p}" for p in found]
    paragraph: list[Line] = []
    for line in [*lines, Line(0, "", None, None)]:
        if line.text.strip():
            paragraph.append(line)
            continue
        if paragraph and not any(p.planned for p in paragraph):
            for p in provider_problems("\n".join(x.text for x in paragraph)):
                problems.append(f"{rel}:{paragraph[0].number}: {p}")
        paragraph = []
    for start, body in planned_sections(lines).items():
        if not re.search(r"\bplanned\b", body, re.IGNORECASE):
            problems.append(
                f'{rel}:{start}: a "What comes next" section must say "planned" in its text'
            )
    return problems


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", texts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_promise_resolves(path: Path) -> None:
    problems = promise_problems(path)
    assert not problems, (
        "these promise what does not exist; name only what exists, or move a plan into a "
        '"What comes next" section that says "planned" (tests/test_promises.py):\n'
        + "\n".join(problems)
    )


def test_the_rules_catch_what_they_must(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    future = max(CHAPTERS) + 1
    sample = tmp_path / "docs" / "sample.md"
    sample.parent.mkdir()
    sample.write_text(
        f"Chapter {future} adds users; see chapters 1 to {future}.\n\n"
        f"The folder `{future:02d}-scale-out` and `notebooks/{future:02d}-load.ipynb`.\n\n"
        "Set `ASSISTANT_PROVIDER=mistral` or `groq` for a real model.\n\n"
        f"Run `grader bench 3`, then `grader run {future}` and `grader run 3 --replicas 3`,\n"
        "`grader dev deploy` and `grader hint 9.9`.\n\n"
        "```bash\ngrader check 3 --fast   # chapter 3, fast\n```\n\n"
        "See [the guide](missing.md) and <http://127.0.0.1:8001/chapters/99-nope/>.\n\n"
        "## What comes next\n\n"
        f"Chapter {future} is planned, with `ASSISTANT_PROVIDER=mistral`.\n\n"
        "## What comes next, again\n\n"
        f"Chapter {future} will come.\n\n"
        "## Back to facts\n\n"
        f"Chapter {future} exists.\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    problems = "\n".join(promise_problems(sample))
    for expected in (
        f":1: 'Chapter {future}' names chapter {future}",
        f":1: 'chapters 1 to {future}' names chapter {future}",
        f":3: '{future:02d}-scale-out' names chapter folder",
        f":3: '{future:02d}-load' names chapter folder",
        ":5: ASSISTANT_PROVIDER='groq'",
        ":5: ASSISTANT_PROVIDER='mistral'",
        "`grader bench`: no such subcommand",
        f"`grader run {future}`: workbook.toml has no chapter {future}",
        "`grader run` has no option --replicas",
        "`grader dev deploy`: no such subcommand",
        "`grader hint 9.9`: no such milestone",
        "`grader check` has no option --fast",
        "the link 'missing.md' leads nowhere",
        "chapters/99-nope/",
        f"`notebooks/{future:02d}-load.ipynb` does not exist",
        ':20: a "What comes next" section must say "planned"',
        f":26: 'Chapter {future}' names chapter {future}",
    ):
        assert expected in problems, f"{expected!r} not found in:\n{problems}"
    assert ":16:" not in problems and ":18:" not in problems, problems  # a plan is a plan
    assert ":22:" not in problems, problems


def test_real_commands_pass() -> None:
    parser = build_parser()
    for command in (
        "grader",
        "grader check 3 --db postgres",
        "grader run 3 --workers 2",
        "grader dev verify --chapter 2",
        "grader db show THREAD_ID --db postgres",
        "grader hint 2.2",
        ".venv/bin/grader dev starters --check",
    ):
        assert grader_problems(command, parser) == [], command
    assert provider_problems("`ASSISTANT_PROVIDER` (default `offline`)") == []
