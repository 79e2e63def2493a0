"""The pytest plugin behind `grader check`: milestones, dependencies, fixtures and the report.

Checks are functions decorated `@milestone("3.2")` (grader.toolkit.milestone), collected whatever
their name. This plugin runs them in manifest order, skips a check whose milestone dependency or
`after=` check did not pass (as blocked, with `blocked_by`), passes a check's return value to the
checks that depend on it, keeps a step log per check, and prints a check50-style report instead
of pytest's own output. An exception that is not a check failure is the grader's own fault and is
reported as `error`, never blamed on the learner.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grader import REPO_ROOT
from grader.databases import Databases
from grader.dbservers.errors import DatabaseUnavailable
from grader.manifest import DATABASE_KINDS, Chapter, Manifest, load
from grader.report import (
    MilestoneResult,
    Report,
    Status,
    render_header,
    render_milestone,
    render_summary,
)
from grader.toolkit import forkserver, preload, steps
from grader.toolkit.causes import raised
from grader.toolkit.chat import ChatApi
from grader.toolkit.expect import CheckFailed
from grader.toolkit.milestone import Blocked, depends_on, milestone_of
from grader.toolkit.procs import Backend, BackendError, start_all, stop_all


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grader")
    group.addoption("--target", help="chapter folder to check (default: chapters/<slug>)")
    group.addoption("--db", default="sqlite", choices=DATABASE_KINDS)
    group.addoption("--grader-json", help="also write the report as JSON to this file")
    group.addoption(
        "--require-all",
        action="store_true",
        default=bool(os.environ.get("CI")),
        help="a check that cannot run (no database server) fails instead of skipping",
    )
    group.addoption(
        "--milestone",
        action="append",
        default=[],
        help="run only this milestone's checks and those of the milestones it depends on",
    )


class State:
    """Per-session bookkeeping shared by the hooks and fixtures."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.manifest: Manifest = load()
        self.chapter: Chapter | None = None
        self.target: Path | None = None
        self.db: str = config.getoption("db")
        self.results: dict[str, MilestoneResult] = {}
        self.backends: list[Backend] = []
        self.log_marks: dict[int, int] = {}
        # check name -> what it returned, for the checks that declared `after=` it
        self.outputs: dict[str, Any] = {}
        self.report: Report | None = None
        # Checks not finished yet, per milestone; the milestones printed so far, in order.
        self.unfinished: Counter[str] = Counter()
        self.shown = 0
        self.color = os.isatty(1)


STATE = pytest.StashKey[State]()


def _state(config: pytest.Config) -> State:
    return config.stash[STATE]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "milestone(id): the milestone a check belongs to")
    config.stash[STATE] = State(config)
    _start_fork_server(config)


# --- warm-up: feedback speed is part of the design (SPEC §5) -----------------------------------


def _start_fork_server(config: pytest.Config) -> None:
    """Adopt the fork server `grader check` started for this session, or start one now: it
    preloads FastAPI, uvicorn and SQLAlchemy while pytest collects, and every backend is then
    forked from it. Closed (its leftover backends stopped) when pytest unconfigures."""
    server = forkserver.ForkServer.adopt_from_env()
    if server is None and forkserver.enabled():
        try:
            server = forkserver.ForkServer.start(
                also=forkserver.drivers_for(config.getoption("db"))
            )
        except OSError:
            server = None  # every backend starts as a subprocess, as before
    if server is None:
        return
    forkserver.activate(server)

    def close() -> None:
        forkserver.activate(None)
        server.close()

    config.add_cleanup(close)


def _milestone_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("milestone")
    return mark.args[0] if mark else None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> Any:
    """A milestone check is collected whatever its name: its docstring is its title."""
    if inspect.isfunction(obj) and milestone_of(obj) and not name.startswith("test"):
        return pytest.Function.from_parent(collector, name=name, callobj=obj)
    return None


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        # Collection errors would otherwise vanish with pytest's terminal output switched off.
        print(f"grader: could not load the checks in {report.nodeid}:\n{report.longreprtext}")


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = _state(config)
    chapters = {
        int(m.group(1)) for item in items if (m := re.match(r"(\d+)\.", _milestone_of(item) or ""))
    }
    unmarked = [item.nodeid for item in items if _milestone_of(item) is None]
    if unmarked:
        raise pytest.UsageError(f"checks without @milestone: {unmarked}")
    if len(chapters) != 1:
        raise pytest.UsageError(f"run one chapter's checks at a time (got chapters {chapters})")
    state.chapter = state.manifest.chapter(chapters.pop())
    order = {m.id: i for i, m in enumerate(state.chapter.milestones)}
    unknown = {_milestone_of(i) for i in items} - order.keys()
    if unknown:
        raise pytest.UsageError(f"checks mark milestones missing from workbook.toml: {unknown}")
    # Stable sort: manifest order between milestones, file order within one.
    items.sort(key=lambda item: order[_milestone_of(item)])
    if chosen := config.getoption("milestone"):
        if strangers := set(chosen) - order.keys():
            raise pytest.UsageError(
                f"chapter {state.chapter.number} has no milestone {', '.join(sorted(strangers))}"
            )
        wanted = state.chapter.with_dependencies(chosen)
        config.hook.pytest_deselected(items=[i for i in items if _milestone_of(i) not in wanted])
        items[:] = [i for i in items if _milestone_of(i) in wanted]
    option = config.getoption("target")
    state.target = Path(option).resolve() if option else REPO_ROOT / "chapters" / state.chapter.slug
    for m in state.chapter.milestones:
        state.results[m.id] = MilestoneResult.pending(m, state.manifest)
    selected = {_milestone_of(i) for i in items}
    preload.start(selected)
    for mid, result in state.results.items():
        if mid not in selected:
            result.status = Status.NOT_RUN
    state.unfinished = Counter(_milestone_of(i) for i in items)
    state.report = Report(
        chapter=state.chapter,
        target=state.target,
        db=state.db,
        milestones=list(state.results.values()),
    )


# --- the report, printed as it settles: the first failure shows while later checks run -----------


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    state = _state(session.config)
    if state.report is not None and not session.config.option.collectonly:
        _print(render_header(state.report, state.color))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[Any]:
    result = yield
    state = _state(item.config)
    state.unfinished[_milestone_of(item)] -= 1
    _show_settled(state)
    return result


def _show_settled(state: State, everything: bool = False) -> None:
    """Print, in manifest order, each milestone whose checks have all run (or all of them)."""
    milestones = state.report.milestones if state.report is not None else []
    while state.shown < len(milestones):
        result = milestones[state.shown]
        if not everything and state.unfinished[result.milestone.id] > 0:
            return
        result.finish(state.target)
        _print(render_milestone(result, state.color))
        state.shown += 1


def _print(lines: list[str]) -> None:
    print("\n".join(lines), flush=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the fixtures: a blocked check boots no backend."""
    state = _state(item.config)
    steps.begin()
    milestone = state.chapter.milestone(_milestone_of(item))
    for dep in milestone.depends:
        result = state.results.get(dep)
        if result is not None and result.status in (Status.FAILED, Status.SKIPPED, Status.ERROR):
            raise Blocked(dep)
    after = depends_on(getattr(item, "obj", None))
    if after is not None and after.__name__ not in state.outputs:
        raise Blocked(milestone_of(after), after.__name__)
    if state.results[milestone.id].status in (Status.FAILED, Status.ERROR):
        pytest.skip("an earlier check of this milestone already failed")
    for b in state.backends:
        state.log_marks[id(b)] = b.log_offset_now()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool:
    """Call the check with its fixtures (and its `after=` check's value); keep what it returns."""
    state = _state(pyfuncitem.config)
    check = pyfuncitem.obj
    fixtures = {n: pyfuncitem.funcargs[n] for n in inspect.signature(check).parameters}
    after = depends_on(check)
    given = (state.outputs[after.__name__],) if after is not None else ()
    state.outputs[check.__name__] = check(*given, **fixtures)
    return True


# Exceptions that describe the learner's code (or a missing database server), not the grader.
_REPORTED = (CheckFailed, BackendError, DatabaseUnavailable)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    report = yield
    state = _state(item.config)
    result = state.results[_milestone_of(item)]
    if call.when == "teardown" and not report.failed:
        return report
    if report.skipped and call.when in ("setup", "call"):
        exc = call.excinfo.value if call.excinfo else None
        if result.status in (Status.PENDING, Status.PASSED):
            result.status = Status.SKIPPED
            result.rationale = getattr(exc, "msg", None) or "skipped"
            result.blocked_by = getattr(exc, "blocked_by", None)
    elif report.failed and result.status not in (Status.FAILED, Status.ERROR):
        exc = call.excinfo.value if call.excinfo else None
        result.steps = steps.taken()
        if isinstance(exc, _REPORTED):
            result.status = Status.FAILED
            result.rationale = getattr(exc, "rationale", None) or str(exc)
            if isinstance(exc, BackendError) and (found := raised(exc.log)):
                result.rationale += f": it raised {found}"
            result.expected = getattr(exc, "expected", None)
            result.actual = getattr(exc, "actual", None)
            result.log = getattr(exc, "log", None) or _logs_since_setup(state)
        else:
            result.status = Status.ERROR
            result.rationale = f"the grader stopped on {type(exc).__name__}: {exc}"
            result.traceback = report.longreprtext
            result.log = _logs_since_setup(state)
    elif report.passed and call.when == "call" and result.status == Status.PENDING:
        result.status = Status.PASSED
    return report


def _logs_since_setup(state: State) -> str:
    chunks = []
    for b in state.backends:
        text = b.log_since(state.log_marks.get(id(b), 0), last=12)
        if text.strip():
            chunks.append(f"[{b.name} on port {b.port}]\n{text}")
    return "\n".join(chunks)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    for b in state.backends:
        b.stop()
    if state.chapter is None or state.target is None:  # the checks failed to load
        return
    report = state.report
    if report is None or session.config.option.collectonly:  # nothing ran: nothing to report
        return
    _show_settled(state, everything=True)  # those left when a run stops early (Ctrl-C)
    _print(render_summary(report, state.color))
    json_path = session.config.getoption("grader_json")
    if json_path:
        Path(json_path).write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    if exitstatus in (0, 1):
        session.exitstatus = 1 if report.has_failures else 0


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def grader_state(request: pytest.FixtureRequest) -> State:
    return _state(request.config)


@pytest.fixture(scope="session")
def target(grader_state: State) -> Path:
    path = grader_state.target
    if not (path / "backend" / "main.py").is_file():
        pytest.exit(
            f"grader: {path} does not look like a chapter folder (no backend/main.py); "
            "pass --target DIR or check the chapter number",
            returncode=2,
        )
    return path


@pytest.fixture(scope="session")
def databases(grader_state: State, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(
        grader_state.db,
        tmp_path_factory.mktemp("databases"),
        grader_state.config.getoption("require_all"),
    )
    yield dbs
    dbs.close()


@pytest.fixture()
def database_url(databases: Databases) -> str:
    """A fresh, empty database for one check."""
    return databases.fresh_url()


@pytest.fixture(scope="session")
def spawn(
    grader_state: State,
    target: Path,
    tmp_path_factory: pytest.TempPathFactory,
    databases: Databases,  # set up first so it is torn down last: backends stop before servers
) -> Iterator[Any]:
    """`spawn(database_url, count=1, workers=None, env=None)`: start backends, wait for /health.

    Several at once boot in parallel. Every one is stopped at the end of the session at the
    latest, by PID, whatever the checks did.
    """
    base = tmp_path_factory.mktemp("backends")

    def _spawn(
        database_url: str,
        count: int = 1,
        workers: int | None = None,
        env: dict[str, str] | None = None,
    ) -> list[Backend]:
        started = []
        for _ in range(count):
            n = len(grader_state.backends) + 1
            b = Backend(
                target,
                base / f"backend-{n}",
                env={"DATABASE_URL": database_url, "ASSISTANT_PROVIDER": "offline", **(env or {})},
                workers=workers,
                name=f"backend-{n}",
            )
            grader_state.backends.append(b)
            grader_state.log_marks[id(b)] = 0
            started.append(b)
        try:
            return start_all(started)
        finally:
            preload.finish()  # Streamlit's testing API, imported while the backends boot

    yield _spawn
    stop_all(grader_state.backends)


@pytest.fixture(scope="module")
def shared_backend(spawn: Any, databases: Databases) -> Backend:
    """One backend reused by the checks of a module that need no fresh process."""
    (backend,) = spawn(databases.fresh_url())
    return backend


@pytest.fixture()
def api(shared_backend: Backend) -> Iterator[ChatApi]:
    with ChatApi(shared_backend) as client:
        yield client
