"""Chapter 6 milestones: users and tokens, threads that belong to someone, and paged reads.

Every backend runs on a database `alembic upgrade head` (the chapter's own migrations) made,
with `SECRET_KEY` set to the grader's key, so the grader can sign tokens of its own: expired,
without `exp`, unsigned, signed with another key. The checks talk HTTP only, except one that
reads the database to see how passwords are stored, whatever the layout of the users table.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from grader.databases import Databases
from grader.toolkit.accounts import (
    OTHER_KEY,
    SIGNING_KEY,
    Account,
    expect_unauthorized,
    fresh_name,
    log_in,
    new_account,
    register,
    sign,
    unsigned,
)
from grader.toolkit.chat import ChatApi, Http, Message, same_thread
from grader.toolkit.conversation import Conversation, expect_remembers
from grader.toolkit.dbview import DbView, plan_problem, query_plan
from grader.toolkit.expect import expect, fail, shorten
from grader.toolkit.explain import explain_history
from grader.toolkit.legacy import LegacyThread, write_chapter_4_database
from grader.toolkit.migrations import alembic, run_alembic, said, upgrade_head
from grader.toolkit.milestone import milestone
from grader.toolkit.preload import in_background
from grader.toolkit.procs import Backend, BackendError

if TYPE_CHECKING:
    from grader.toolkit.page import Page

KEYED = {"SECRET_KEY": SIGNING_KEY}
# The page check needs Streamlit (a second to import): import it while the backend checks run.
in_background("grader.toolkit.page", "6.8")
# A title is the first prompt cut to 80 code points: this one is longer, with an emoji (two
# UTF-16 units, four UTF-8 bytes) across the cut.
LONG_PROMPT = "A" * 78 + "🐉é and the rest of a long first prompt that the title leaves out"


@dataclass(frozen=True)
class App:
    """One backend on a fresh database the chapter's migrations made."""

    url: str
    backend: Backend
    target: Path

    def http(self, token: str | None = None) -> Http:
        return Http(self.backend, token=token)

    def chat(self, account: Account) -> ChatApi:
        return ChatApi(self.backend, token=account.token)


def migrated_url(databases: Databases, target: Path) -> str:
    url = databases.fresh_url()
    upgrade_head(target, url)
    return url


@pytest.fixture(scope="module")
def app(spawn: Any, databases: Databases, target: Path) -> App:
    url = migrated_url(databases, target)
    (backend,) = spawn(url, env=KEYED)
    return App(url, backend, target)


def without_ids(messages: list[Message]) -> list[Message]:
    return [{k: v for k, v in m.items() if k != "id"} for m in messages]


def expect_422s(http: Http, path: str, queries: dict[str, str], rule: str) -> None:
    """`GET path?query` must be a 422 for each query (its value says what is wrong with it)."""
    route = "/" + path.split("/")[1]
    for query, why in queries.items():
        r = http.get(f"{path}?{query}", None)
        expect(
            r.status_code == 422,
            f"GET {route} with {why} answered {r.status_code}: {rule}",
            expected="422",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )


def expect_404(http: Http, method: str, path: str, whose: str, **kw: Any) -> None:
    """`method path` must be a 404, as for a thread that does not exist."""
    r = http.request(method, path, expect_status=None, **kw)
    if r.status_code == 404:
        return
    if r.status_code == 403:
        fail(
            f"{method} {path} on {whose} answered 403: that tells the caller the thread exists. "
            "Answer 404, exactly as for a thread that does not exist",
            expected="404",
            actual=f"403: {shorten(r.text, 200)}",
        )
    if r.status_code < 300:
        fail(
            f"{method} {path} on {whose} was served ({r.status_code}): every query of a thread "
            "must also match its owner (… AND user_id = the caller), else it is a 404",
            expected="404",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
    http.unexpected(r, 404)


# --- 6.1 register, log in, and every 401 ----------------------------------------------------


@milestone("6.1")
def registers_and_logs_in(app: App) -> Account:
    """POST /users registers (409 taken, 422 bad), POST /token logs in (401 the same for an
    unknown user and a wrong password), and the token opens POST /chat."""
    with app.http() as http:
        alice = register(http, fresh_name("alice"))
        taken = http.post("/users", None, json={"username": alice.username, "password": "x" * 12})
        expect(
            taken.status_code == 409,
            "registering a username that is taken must answer 409 (the unique constraint "
            "decides: catch its IntegrityError)",
            expected="409",
            actual=f"{taken.status_code}: {shorten(taken.text, 200)}",
        )
        other_case = alice.username.upper()
        r = http.post("/users", None, json={"username": other_case, "password": "x" * 12})
        expect(
            r.status_code == 201,
            f"registering {other_case!r} when {alice.username!r} exists answered "
            f"{r.status_code}: usernames are exact and case-sensitive",
            expected="201",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
        for username, password, wrong in (
            ("ab", "long enough pw", "a username of 2 characters"),
            ("u" * 65, "long enough pw", "a username of 65 characters"),
            ("has space", "long enough pw", "a username with a space"),
            (fresh_name(), "Sh0rt!x", "a password of 7 characters"),
            (fresh_name(), "L" * 129, "a password of 129 characters"),
        ):
            r = http.post("/users", None, json={"username": username, "password": password})
            expect(
                r.status_code == 422,
                f"POST /users with {wrong} answered {r.status_code}: usernames are 3-64 of "
                "A-Z a-z 0-9 _ . - and passwords 8-128 characters, else 422",
                expected="422",
                actual=f"{r.status_code}: {shorten(r.text, 200)}",
            )
            expect(
                password not in r.text,
                f"the 422 for {wrong} repeats the password: an error body (and the logs that "
                "keep it) must never hold a password",
                actual=shorten(r.text, 300),
            )
        alice = log_in(http, alice)
        wrong = http.post("/token", None, data={"username": alice.username, "password": "nope" * 3})
        unknown = http.post("/token", None, data={"username": fresh_name(), "password": "nope" * 3})
        for r, what in ((wrong, "a wrong password"), (unknown, "an unknown username")):
            expect(
                r.status_code == 401,
                f"POST /token with {what} answered {r.status_code}: wrong credentials are 401",
                expected="401",
                actual=f"{r.status_code}: {shorten(r.text, 200)}",
            )
        expect(
            wrong.text == unknown.text,
            "POST /token answers an unknown username and a wrong password differently: that "
            "tells anybody which usernames exist. Give both the same 401",
            expected=f"the same body twice: {shorten(wrong.text, 120)}",
            actual=f"unknown user: {shorten(unknown.text, 120)}",
        )
        as_json = http.post(
            "/token", None, json={"username": alice.username, "password": alice.password}
        )
        expect(
            as_json.status_code == 422,
            f"POST /token with a JSON body answered {as_json.status_code}: the OAuth2 password "
            "flow sends a form (OAuth2PasswordRequestForm), so JSON is a malformed request",
            expected="422",
            actual=f"{as_json.status_code}: {shorten(as_json.text, 200)}",
        )
    with app.chat(alice) as chat:
        chat.turn("Hello, I am logged in.")
    return alice


@milestone("6.1", after=registers_and_logs_in)
def passwords_are_salted_slow_hashes(alice: Account, app: App) -> None:
    """The database holds neither a password nor a fast or unsalted hash of it."""
    password = f"same-pw-{uuid.uuid4().hex[:8]}"
    with app.http() as http:
        twins = [register(http, fresh_name("twin"), password) for _ in range(2)]
    db = DbView(app.url, backend_dir=app.backend.workdir)
    stored = []
    for twin in twins:
        rows = db.rows_holding(twin.username)
        expect(
            bool(rows),
            f"no table of the database holds the username {twin.username!r} that POST /users "
            "answered 201 for: store users in the database DATABASE_URL names",
            actual=f"tables: {sorted(db.tables())}",
        )
        table, row = rows[0]
        values = {k: str(v) for k, v in row.items() if v is not None}
        if any(password in v for v in values.values()):
            fail(
                f"table {table!r} holds the password as it was sent: store only a salted, slow "
                "hash of it (pwdlib's Argon2 hasher: password_hash.hash)",
                actual=shorten(values, 300),
            )
        fast = {
            hashlib.new(name, password.encode()).hexdigest(): name
            for name in ("md5", "sha1", "sha256", "sha512")
        }
        for v in values.values():
            if v.lower() in fast:
                fail(
                    f"table {table!r} holds the {fast[v.lower()]} of the password: a fast hash "
                    "without salt is cracked with a dictionary in seconds. Use pwdlib (Argon2)",
                    actual=shorten(values, 300),
                )
        stored.append(values)
    first, second = stored
    same = [k for k in first if k in second and first[k] == second[k] and len(first[k]) >= 20]
    expect(
        not same,
        f"two users with one password have the same {same[0] if same else ''!s}: the hash "
        "has no salt, so equal passwords show. pwdlib adds a random salt to every hash",
        actual=shorten({k: first[k] for k in same}, 300),
    )
    slow = ("$argon2", "$2a$", "$2b$", "$2y$", "$scrypt", "$pbkdf2")
    expect(
        any(v.startswith(slow) for v in first.values()),
        "no column of the user's row holds a password hash in a known slow format (Argon2, "
        "bcrypt, scrypt, PBKDF2): hash passwords with pwdlib (Argon2)",
        expected="a value like $argon2id$v=19$m=…",
        actual=shorten(first, 300),
    )


@milestone("6.1", after=registers_and_logs_in)
def every_bad_token_is_401(alice: Account, app: App) -> None:
    """Missing, malformed, forged, unsigned, expired and exp-less tokens are all 401, before
    the body is looked at; a token signed with SECRET_KEY for the user's id is accepted."""
    chat_body = {"prompt": "Who am I?", "thread_id": None}
    real = alice.token
    head, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    swapped = {**claims, "sub": str(uuid.uuid4())}
    forged_payload = base64.urlsafe_b64encode(json.dumps(swapped).encode()).rstrip(b"=").decode()
    cases = [
        (None, "no Authorization header"),
        ("Bearer", "an empty Bearer token"),
        (f"Basic {base64.b64encode(b'alice:secret').decode()}", "Basic credentials"),
        ("Bearer not-a-token", "a token that is not a JWT"),
        (f"Bearer {sign(alice.id, OTHER_KEY)}", "a token signed with another key"),
        (f"Bearer {unsigned(alice.id)}", 'an "alg": "none" token (no signature)'),
        (f"Bearer {sign(alice.id, exp_in=-120)}", "a token that expired 2 minutes ago"),
        (f"Bearer {sign(alice.id, exp_in=None)}", 'a token without "exp"'),
        (f"Bearer {head}.{forged_payload}.{signature}", "a token whose claims were changed"),
    ]
    never = str(uuid.uuid4())
    with app.http() as http:
        for header, why in cases:
            headers = {"Authorization": header} if header else {}
            expect_unauthorized(http, "POST", "/chat", why, json=chat_body, headers=headers)
        for method, path in (("GET", "/threads"), ("GET", f"/history/{never}")):
            expect_unauthorized(http, method, path, "no Authorization header")
        expect_unauthorized(http, "DELETE", f"/history/{never}", "no Authorization header")
        expect_unauthorized(
            http,
            "POST",
            "/chat",
            "no token and a body that is not JSON",
            content=b'{"prompt": ',
            headers={"Content-Type": "application/json"},
        )
        expect_unauthorized(http, "POST", "/chat", "no token and no prompt", json={})
    with ChatApi(app.backend, token=sign(alice.id)) as chat:
        r = chat.post("/chat", None, json=chat_body)
        expect(
            r.status_code == 200,
            f"a token the grader signed with SECRET_KEY (HS256, sub = the user's id, exp in "
            f"10 minutes) got {r.status_code}: sign and check tokens with SECRET_KEY from the "
            "environment, never a key of the backend's own, with the user's id in sub",
            expected="200",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )


# --- 6.2 any instance verifies a token another issued ----------------------------------------


@milestone("6.2")
def tokens_work_on_every_instance(app: App, spawn: Any) -> None:
    """A token issued by one instance works on another with the same SECRET_KEY, and none
    works on an instance with another key; without SECRET_KEY the backend does not start."""
    same, other = spawn(app.url, env=KEYED)[0], spawn(app.url, env={"SECRET_KEY": OTHER_KEY})[0]
    with app.http() as on_a, Http(same) as on_b, Http(other) as on_c:
        account = register(on_a, fresh_name("roamer"))
        from_b = log_in(on_b, account)
        for backend, where in ((app.backend, "instance 1"), (same, "instance 2")):
            with ChatApi(backend, token=from_b.token) as chat:
                r = chat.post("/chat", None, json={"prompt": "hello", "thread_id": None})
                expect(
                    r.status_code == 200,
                    f"a token instance 2 issued was refused by {where} ({r.status_code}): every "
                    "instance must sign and check tokens with SECRET_KEY from the environment, "
                    "never a key of its own",
                    expected="200",
                    actual=f"{r.status_code}: {shorten(r.text, 200)}",
                )
                if r.status_code == 200:
                    chat.turn_from(r, "hello", None)
        from_c = log_in(on_c, account)
        for http, token, why in (
            (on_a, from_c.token, "a token from an instance with another SECRET_KEY"),
            (on_c, from_b.token, "a token from an instance with another SECRET_KEY"),
        ):
            expect_unauthorized(
                http,
                "POST",
                "/chat",
                why,
                json={"prompt": "hi", "thread_id": None},
                headers={"Authorization": f"Bearer {token}"},
            )
    expect_no_start(
        spawn,
        app.url,
        {"SECRET_KEY": "", "DEV_MODE": ""},
        names="SECRET_KEY",
        unnamed="without SECRET_KEY the backend stopped, but its output does not say why: name "
        "SECRET_KEY in the error, so whoever deploys it knows what to set",
        started="the backend started without SECRET_KEY: it must refuse (a key of its own "
        "would make every instance's tokens different; a key in the code lets anybody sign "
        "tokens)",
    )


# --- 6.3 another user's thread does not exist -------------------------------------------------


@milestone("6.3", after=registers_and_logs_in)
def others_threads_are_404(alice: Account, app: App) -> Conversation:
    """Another user's thread is 404 for GET, DELETE and POST /chat, and stays untouched; a thread
    that never existed is 404 too; Idempotency-Keys are per user."""
    with app.http() as http:
        bob = new_account(http, "bob")
    with app.chat(alice) as mine, app.chat(bob) as theirs:
        first = mine.turn("My secret plan: sail to Saltmere at dawn.")
        tid = first.thread_id
        second = mine.turn("roll 2d6", tid)
        written = Conversation(tid, first.messages).plus(second.messages)
        whose = "another user's thread"
        expect_404(theirs, "GET", f"/history/{tid}", whose)
        expect_404(theirs, "GET", f"/history/{tid}?limit=2", whose)
        expect_404(theirs, "DELETE", f"/history/{tid}", whose)
        expect_404(theirs, "POST", "/chat", whose, json={"prompt": "I was here", "thread_id": tid})
        explain_history(
            without_ids(mine.history(tid)),
            written.messages,
            "the owner's thread after another user's GET, DELETE and POST /chat on it",
            lost="another user's DELETE /history emptied the owner's thread: DELETE must "
            "match the owner too",
        )
        never = str(uuid.uuid4())
        for method, path, kw in (
            ("GET", f"/history/{never}", {}),
            ("DELETE", f"/history/{never}", {}),
            ("POST", "/chat", {"json": {"prompt": "hello?", "thread_id": never}}),
        ):
            expect_404(mine, method, path, "a thread that does not exist", **kw)
        remembered = expect_remembers(mine, written, "On the owner's own thread")
        key = f"shared-key-{uuid.uuid4()}"
        body = {"prompt": "Keep this for me.", "thread_id": None}
        headers = {"Idempotency-Key": key}
        hers = mine.turn_from(mine.post("/chat", json=body, headers=headers), body["prompt"], None)
        r = theirs.post("/chat", None, json=body, headers=headers)
        if r.status_code == 200 and same_thread(r.json().get("thread_id"), hers.thread_id):
            fail(
                "another user sending the same Idempotency-Key got the first user's answer "
                "replayed (her thread id): keys are per user, so hash the user's id with the key",
                expected="a new turn in a thread of the second user's own",
                actual=shorten(r.text, 200),
            )
        expect(
            r.status_code == 200,
            f"another user's first request with an Idempotency-Key answered {r.status_code}: "
            "keys are per user, so for the second user it is a key never seen",
            expected="200",
            actual=f"{r.status_code}: {shorten(r.text, 200)}",
        )
    return remembered


# --- 6.4 the thread list, newest first, a page at a time -------------------------------------


def thread_page(http: Http, **params: Any) -> tuple[list[dict[str, Any]], str | None]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    path = f"/threads?{query}" if query else "/threads"
    body = http.json("GET", path)
    threads = body.get("threads") if isinstance(body, dict) else None
    expect(
        isinstance(threads, list)
        and all(isinstance(t, dict) and {"thread_id", "title"} <= set(t) for t in threads)
        and "next_cursor" in body,
        'GET /threads must answer {"threads": [{"thread_id", "title", "created_at", '
        '"updated_at"}, ...], "next_cursor": str or null}',
        actual=shorten(body, 300),
    )
    return threads, body["next_cursor"]


def ids_of(threads: list[dict[str, Any]]) -> list[str]:
    return [str(uuid.UUID(str(t["thread_id"]))) for t in threads]


def every_page(http: Http, limit: int, cursor: str | None = None) -> list[list[str]]:
    """Follow next_cursor from `cursor` (None: the first page) to the end: each page's ids."""
    pages = []
    for _ in range(30):
        threads, cursor = (
            thread_page(http, limit=limit, cursor=cursor)
            if cursor
            else thread_page(http, limit=limit)
        )
        pages.append(ids_of(threads))
        if cursor is None:
            return pages
    fail(f"GET /threads?limit={limit} gave a next_cursor 30 pages in a row for a few threads")


def named(ids: list[str], names: dict[str, str]) -> str:
    return ", ".join(names.get(i, i[:8]) for i in ids) or "(none)"


def aware(value: Any, what: str) -> datetime:
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        when = None
    expect(
        when is not None and when.utcoffset() is not None,
        f"{what} must be an ISO 8601 time with its time zone (UTC), e.g. "
        "2026-12-01T10:00:00.123456Z",
        actual=repr(value),
    )
    return when  # type: ignore[return-value]


def whole_seconds(threads: list[dict[str, Any]]) -> str:
    """Why an order went wrong, when every time listed is a whole second: threads made within
    one second tie, and the tie-break by id (random) decides their order."""
    times = [aware(t.get("updated_at"), "a thread's updated_at") for t in threads]
    if len(times) < 2 or any(t.microsecond for t in times):
        return ""
    return (
        ". Every updated_at is a whole second, so threads made within one second tie and "
        "their order is their ids': keep microseconds (on MySQL a DATETIME column holds whole "
        "seconds unless it is declared DATETIME(6))"
    )


@milestone("6.4", after=registers_and_logs_in)
def threads_are_listed_newest_first(alice: Account, app: App) -> None:
    """GET /threads lists only the caller's threads, newest first, titled by their first
    prompt; a thread that gets a turn moves to the front, its title kept."""
    with app.http() as http:
        owner, stranger = new_account(http, "lister"), new_account(http, "stranger")
    with app.chat(owner) as chat, app.chat(stranger) as theirs:
        theirs.turn("A thread that is not yours.")
        prompts = [LONG_PROMPT, "Tell me about the dragon", "roll 1d20", "Second thoughts"]
        made = [chat.turn(p).thread_id for p in prompts]
        names = {str(uuid.UUID(t)): f"thread {n}" for n, t in enumerate(made, 1)}
        threads, _ = thread_page(chat)
        listed = ids_of(threads)
        foreign = [t for t in listed if t not in names]
        expect(
            not foreign,
            "GET /threads listed a thread of another user: select only the caller's threads "
            "(WHERE user_id = the caller)",
            expected=named(list(reversed(list(names))), names),
            actual=named(listed, names),
        )
        want = list(reversed(list(names)))
        expect(
            listed == want,
            "GET /threads must list the caller's threads newest first (ORDER BY updated_at "
            "DESC, id DESC)" + whole_seconds(threads),
            expected=named(want, names),
            actual=named(listed, names),
        )
        by_id = {str(uuid.UUID(str(t["thread_id"]))): t for t in threads}
        for thread, prompt in zip(names, prompts, strict=True):
            expect(
                by_id[thread]["title"] == prompt[:80],
                f"{names[thread]}'s title is not its first prompt cut to 80 characters",
                expected=prompt[:80],
                actual=repr(by_id[thread]["title"]),
            )
            created = aware(by_id[thread].get("created_at"), "a thread's created_at")
            updated = aware(by_id[thread].get("updated_at"), "a thread's updated_at")
            expect(updated >= created, "a thread's updated_at is before its created_at")
        oldest = next(iter(names))
        before = aware(by_id[oldest]["updated_at"], "updated_at")
        chat.turn("A later prompt, which must not become the title", made[0])
        threads, _ = thread_page(chat)
        listed = ids_of(threads)
        want = [oldest, *want[:-1]]
        expect(
            listed == want,
            "a thread that just got a turn must move to the front of GET /threads: each turn "
            "sets its thread's updated_at, and the list is ordered by it" + whole_seconds(threads),
            expected=named(want, names),
            actual=named(listed, names),
        )
        moved = threads[0]
        expect(
            moved["title"] == prompts[0][:80],
            "a thread's title changed after a later turn: the title is the first prompt, "
            "set when the thread is made and never changed",
            expected=prompts[0][:80],
            actual=repr(moved["title"]),
        )
        expect(
            aware(moved["updated_at"], "updated_at") > before,
            "a turn did not advance its thread's updated_at" + whole_seconds(threads),
            expected=f"after {before.isoformat()}",
            actual=str(moved["updated_at"]),
        )
        expect_422s(
            chat,
            "/threads",
            {
                "limit=0": "limit=0",
                "limit=101": "limit=101",
                "cursor=not-a-cursor": "a cursor it never gave",
            },
            "limit is 1-100 and a cursor that does not decode is the client's mistake, a 422",
        )


@milestone("6.4", after=threads_are_listed_newest_first)
def pages_hold_while_threads_arrive(_listed: None, app: App) -> None:
    """Following next_cursor shows each thread once, in order, while new threads arrive and
    a thread further down gets a turn (it moves to the front, not shown again below)."""
    with app.http() as http:
        owner = new_account(http, "pager")
    with app.chat(owner) as chat:
        made = [chat.turn(f"Thread number {n}").thread_id for n in range(1, 8)]
        names = {str(uuid.UUID(t)): f"t{n}" for n, t in enumerate(made, 1)}
        t = list(names)
        everything = every_page(chat, limit=3)
        want = list(reversed(t))
        shown = {
            "expected": named(want, names),
            "actual": " | ".join(named(p, names) for p in everything),
        }
        for earlier, later in itertools.pairwise(everything):
            if earlier and later and later[0] == earlier[-1]:
                fail(
                    "the last thread of a page came again first on the next: the cursor is "
                    "exclusive (only threads that sort strictly after the last one shown)",
                    **shown,
                )
        expect(
            [i for page in everything for i in page] == want,
            "following next_cursor from the first page (limit=3) did not give every thread "
            "once, newest first",
            **shown,
        )
        first, cursor = thread_page(chat, limit=3)
        expect(cursor is not None, "GET /threads?limit=3 of 7 threads gave no next_cursor")
        for n in (8, 9):
            names[str(uuid.UUID(chat.turn(f"Thread number {n}").thread_id))] = f"t{n}"
        chat.turn("Thread 2 gets a new turn", made[1])
        rest = every_page(chat, limit=3, cursor=cursor)
        got = [i for page in rest for i in page]
        want = [t[3], t[2], t[0]]
        shown = {
            "expected": f"page 1: {named(ids_of(first), names)}; then {named(want, names)}",
            "actual": f"page 1: {named(ids_of(first), names)}; then "
            + " | ".join(named(p, names) for p in rest),
        }
        repeated = [i for i in got if i in ids_of(first)]
        if repeated:
            boundary = ids_of(first)[-1]
            fail(
                "the last thread of a page came again first on the next: the cursor is "
                "exclusive (only threads that sort strictly after the last one shown)"
                if repeated == [boundary]
                else "page 2 repeated threads of page 1 after new threads were made: page by "
                "the last thread's (updated_at, id), never by an offset",
                **shown,
            )
        if t[1] in got:
            fail(
                "a thread that got a turn after page 1 was shown again further down: it moved "
                "to the front, so the pages after the cursor no longer hold it",
                **shown,
            )
        expect(got == want, "the pages after a cursor skipped or reordered threads", **shown)


# --- 6.5 a long thread, a page at a time -------------------------------------------------------


def history_page(http: Http, thread_id: str, **params: Any) -> tuple[list[Message], int | None]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    path = f"/history/{thread_id}" + (f"?{query}" if query else "")
    body = http.json("GET", path)
    messages = body.get("messages") if isinstance(body, dict) else None
    expect(
        isinstance(messages, list)
        and all(isinstance(m, dict) and isinstance(m.get("id"), int) for m in messages)
        and "next_before" in body,
        'GET /history/<id> must answer {"thread_id", "messages": [{"id": int, "role", '
        '"parts"}, ...], "next_before": int or null}',
        actual=shorten(body, 300),
    )
    return messages, body["next_before"]


def page_listing(messages: list[Message]) -> str:
    return ", ".join(f"#{m['id']}" for m in messages) or "(none)"


@milestone("6.5", after=registers_and_logs_in)
def history_pages_back(alice: Account, app: App) -> None:
    """`before` (exclusive) and `limit` page a thread back from its newest message: no message
    skipped or repeated, even while the thread grows."""
    with app.chat(alice) as chat:
        first = chat.turn("The first message of a long thread.")
        tid = first.thread_id
        written = Conversation(tid, first.messages)
        for prompt in ("roll 2d6", "Tell me about the dragon", "roll 1d4", "And then?"):
            written = written.plus(chat.turn(prompt, tid).messages)
        whole, next_before = history_page(chat, tid)
        explain_history(without_ids(whole), written.messages, "GET /history of the thread")
        ids = [m["id"] for m in whole]
        expect(
            ids == sorted(set(ids)),
            "the messages of GET /history must carry ids that increase along the thread",
            actual=page_listing(whole),
        )
        expect(
            next_before is None,
            "GET /history without parameters is the whole thread: next_before must be null",
            actual=repr(next_before),
        )
        newest, older = history_page(chat, tid, limit=4)
        want = whole[-4:]
        expect(
            [m["id"] for m in newest] == [m["id"] for m in want],
            "GET /history?limit=4 must answer the thread's 4 newest messages, oldest first",
            expected=page_listing(want),
            actual=page_listing(newest),
        )
        expect(
            older == want[0]["id"],
            "next_before must be the id of the page's oldest message when older ones exist",
            expected=want[0]["id"],
            actual=repr(older),
        )
        chat.turn("A turn that arrives while the client pages back", tid)
        pages = [newest]
        for _ in range(len(whole)):
            if older is None:
                break
            page, older = history_page(chat, tid, before=older, limit=4)
            pages.insert(0, page)
        got = [m for page in pages for m in page]
        shown = {
            "expected": page_listing(whole),
            "actual": " | ".join(page_listing(p) for p in pages),
        }
        seen = [m["id"] for m in got]
        if len(seen) != len(set(seen)):
            fail(
                "paging back with before=next_before repeated a message: `before` is exclusive "
                "(id < before), the message it names was on the page before",
                **shown,
            )
        expect(
            seen == ids,
            "paging back with before=next_before and limit=4 did not give every message of "
            "the thread exactly once, in order",
            **shown,
        )
        explain_history(without_ids(got), without_ids(whole), "the pages, put together")
        k = len(whole) // 2
        below, _ = history_page(chat, tid, before=whole[k]["id"])
        expect(
            [m["id"] for m in below] == ids[:k],
            f"GET /history?before={whole[k]['id']} must answer every message older than that "
            "id, and not that one",
            expected=page_listing(whole[:k]),
            actual=page_listing(below),
        )
        expect_422s(
            chat,
            f"/history/{tid}",
            {"limit=0": "limit=0", "limit=1001": "limit=1001", "before=0": "before=0"},
            "limit is 1-1000 and before is at least 1",
        )


# --- 6.6 the migration adopts a chapter 4 database -------------------------------------------


@dataclass(frozen=True)
class Migrated:
    """A chapter 4 database the chapter's migrations upgraded, and its legacy owner."""

    url: str
    threads: list[LegacyThread]
    owner: Account


def legacy_env(owner: Account) -> dict[str, str]:
    return {"LEGACY_OWNER": owner.username, "LEGACY_OWNER_PASSWORD": owner.password}


def stored(db: DbView) -> list[tuple[Any, ...]]:
    return [(r.id, r.thread_id, r.role, json.loads(r.parts)) for r in db.rows()]


def expect_rows_kept(db: DbView, before: list[tuple[Any, ...]], after: str, why: str) -> None:
    if "messages" not in db.tables():
        fail(
            f"the messages table is gone {after}: {why}",
            expected=f"{len(before)} rows, as they were",
            actual=f"tables: {sorted(db.tables())}",
        )
    now = stored(db)
    if now == before:
        return
    shown = {"expected": f"{len(before)} rows, as they were", "actual": f"{len(now)} rows"}
    if not now:
        fail(f"the messages table is empty {after}: {why}", **shown)
    kept = {r[0] for r in now}
    lost = [r for r in before if r[0] not in kept]
    if lost:
        fail(f"{len(lost)} of {len(before)} messages are gone {after}: {why}", **shown)
    fail(
        f"messages changed {after} (their ids, threads, roles or parts): {why}",
        expected=shorten([list(r) for r in before[:3]], 300),
        actual=shorten([list(r) for r in now[:3]], 300),
    )


def expect_no_start(
    spawn: Any, url: str, env: dict[str, str], names: str, unnamed: str, started: str
) -> None:
    """A backend on `url` with `env` must exit at startup, its output naming `names`: `unnamed`
    is the failure when it says nothing of it, `started` when it serves instead."""
    try:
        (backend,) = spawn(url, env=env)
    except BackendError as exc:
        expect(names in exc.log, unnamed, actual=shorten(exc.log[-600:], 600))
        return
    backend.stop()
    fail(
        started,
        expected=f"the backend exits at startup, naming {names}",
        actual="GET /health answered 200",
    )


def expect_refuses_to_start(spawn: Any, url: str, on_what: str) -> None:
    """A backend on `url` must exit at startup, saying to run `alembic upgrade head`."""
    expect_no_start(
        spawn,
        url,
        KEYED,
        names="alembic upgrade head",
        unnamed=f"on {on_what} the backend stopped, but its output does not say what to do: "
        "name the command, `alembic upgrade head`",
        started=f"the backend started on {on_what}: it must refuse a database that is not at "
        "the newest migration (compare Alembic's revision with the head at startup) and never "
        "create tables itself (no metadata.create_all at startup)",
    )


def expect_serves_legacy(backend: Backend, m: Migrated, after: str) -> Account:
    """The legacy owner logs in and finds every old thread, newest first, whole."""
    with Http(backend) as http:
        form = {"username": m.owner.username, "password": m.owner.password}
        r = http.post("/token", None, data=form)
        expect(
            r.status_code != 401,
            f"{after}, the legacy owner (LEGACY_OWNER={m.owner.username}, with "
            "LEGACY_OWNER_PASSWORD set) cannot log in: the migration must create that user "
            "when it is missing, with that password, and give it every thread the chapter 4 "
            "database holds",
            expected="POST /token: 200",
            actual=f"401: {shorten(r.text, 200)}",
        )
        owner = log_in(http, m.owner)
    names = {t.thread_id: f"old thread {n}" for n, t in enumerate(m.threads, 1)}
    with ChatApi(backend, token=owner.token) as chat:
        threads, _ = thread_page(chat)
        listed = ids_of(threads)
        want = [t.thread_id for t in reversed(m.threads)]
        expect(
            set(want) <= set(listed),
            f"{after}, GET /threads of the legacy owner (LEGACY_OWNER) does not list every "
            "thread of the chapter 4 database: each thread in messages needs a threads row "
            "owned by the legacy owner",
            expected=named(want, names),
            actual=named(listed, names),
        )
        old = [t for t in listed if t in names]
        expect(
            old == want,
            f"{after}, the old threads are not listed newest first: a migrated thread's "
            "updated_at is the time of its newest message",
            expected=named(want, names),
            actual=named(old, names),
        )
        by_id = {str(uuid.UUID(str(t["thread_id"]))): t for t in threads}
        for thread in m.threads:
            expect(
                by_id[thread.thread_id]["title"] == thread.title,
                f"{after}, {names[thread.thread_id]}'s title is not its first prompt cut to "
                "80 characters",
                expected=thread.title,
                actual=repr(by_id[thread.thread_id]["title"]),
            )
            history = without_ids(chat.history(thread.thread_id))
            explain_history(
                history[: len(thread.messages)],
                thread.messages,
                f"{after}, {names[thread.thread_id]}",
            )
    return owner


@milestone("6.6")
def migration_adopts_a_chapter_4_database(
    spawn: Any, databases: Databases, target: Path
) -> Migrated:
    """`alembic upgrade head` turns a chapter 4 database into chapter 6's, every message kept
    and every thread given to LEGACY_OWNER; the backend refuses the database until then."""
    url = databases.fresh_url()
    threads = write_chapter_4_database(url)
    db = DbView(url)
    before = stored(db)
    expect_refuses_to_start(spawn, url, "a chapter 4 database no migration has upgraded")
    owner = Account(fresh_name("old_owner"), f"legacy-{uuid.uuid4().hex[:12]}", id="")
    upgrade_head(target, url, env=legacy_env(owner))
    expect_rows_kept(
        db,
        before,
        "after `alembic upgrade head`",
        "the first migration adopts the messages table as it is (never drop or recreate it)",
    )
    migrated = Migrated(url, threads, owner)
    (backend,) = spawn(url, env=KEYED)
    owner = expect_serves_legacy(backend, migrated, "After the migration")
    with ChatApi(backend, token=owner.token) as chat:
        newest = threads[-1]
        expect_remembers(
            chat,
            Conversation(newest.thread_id, newest.messages),
            "On a thread the migration adopted",
        )
    with Http(backend) as http:
        stranger = new_account(http, "newcomer")
    with ChatApi(backend, token=stranger.token) as chat:
        listed, _ = thread_page(chat)
        expect(
            not listed,
            "a user registered after the migration sees old threads: they belong to the legacy "
            "owner only",
            actual=named(ids_of(listed), {t.thread_id: "an old thread" for t in threads}),
        )
    backend.stop()
    return migrated


@milestone("6.6", after=migration_adopts_a_chapter_4_database)
def downgrade_and_upgrade_round_trip(m: Migrated, spawn: Any, target: Path) -> None:
    """`alembic downgrade base` returns to the chapter 4/5 layout with every message, and
    upgrading again gives the same threads to the same owner."""
    db = DbView(m.url)
    before = stored(db)
    alembic(target, m.url, "downgrade", "base", env=legacy_env(m.owner))
    expect_rows_kept(
        db,
        before,
        "after `alembic downgrade base`",
        "a downgrade returns to the old layout and keeps every message (drop only what the "
        "migrations added)",
    )
    db.expect_table()
    upgrade_head(target, m.url, env=legacy_env(m.owner))
    expect_rows_kept(db, before, "after downgrading and upgrading again", "keep every message")
    (backend,) = spawn(m.url, env=KEYED)
    expect_serves_legacy(backend, m, "After `alembic downgrade base` and `upgrade head`")
    backend.stop()


@milestone("6.6", after=migration_adopts_a_chapter_4_database)
def legacy_owner_has_no_known_password(
    _m: Migrated, spawn: Any, databases: Databases, target: Path
) -> None:
    """Without LEGACY_OWNER_PASSWORD the legacy owner, `legacy`, can't be logged in as."""
    url = databases.fresh_url()
    write_chapter_4_database(url)
    upgrade_head(target, url, env={"LEGACY_OWNER": "", "LEGACY_OWNER_PASSWORD": ""})
    expect(
        any(table != "alembic_version" for table, _ in DbView(url).rows_holding("legacy")),
        "after a migration without LEGACY_OWNER, no user is named `legacy`: old threads go to "
        "LEGACY_OWNER, `legacy` by default",
    )
    (backend,) = spawn(url, env=KEYED)
    with Http(backend) as http:
        for guess in ("legacy", "password", "changeme", "legacy123", "12345678", "admin", "secret"):
            r = http.post("/token", None, data={"username": "legacy", "password": guess})
            expect(
                r.status_code != 200,
                f"the legacy owner logs in with the password {guess!r}: without "
                "LEGACY_OWNER_PASSWORD its password must be one nobody knows (the hash of a "
                "random secret nobody is told), or anybody reads every old conversation",
                expected="401",
                actual=f"{r.status_code}: {shorten(r.text, 120)}",
            )
    backend.stop()


@milestone("6.6", after=migration_adopts_a_chapter_4_database)
def unknown_layout_stops_the_upgrade(_m: Migrated, databases: Databases, target: Path) -> None:
    """A table the migrations would create, already there in another layout, stops the upgrade
    with its name before anything changed."""
    url = databases.fresh_url()
    write_chapter_4_database(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY, nickname VARCHAR(40))"))
    finally:
        engine.dispose()
    db = DbView(url)
    tables, before = db.tables(), stored(db)
    done = run_alembic(target, url, "upgrade", "head")
    expect(
        done.returncode != 0,
        "`alembic upgrade head` went ahead on a database whose users table it does not know: "
        "a table it would create that exists already in another layout must stop it",
        expected="a non-zero exit naming the table users",
        actual=f"exit 0; tables now: {sorted(db.tables())}",
    )
    expect(
        "users" in said(done),
        "`alembic upgrade head` stopped on a users table it does not know, but does not say "
        "which table: name it, so whoever runs it knows what to look at",
        actual="\n".join(said(done).splitlines()[-6:]),
    )
    # Alembic makes its own alembic_version table before the first revision runs.
    expect(
        db.tables() - {"alembic_version"} == tables,
        "`alembic upgrade head` stopped on a users table it does not know only after it had "
        "changed the database: check every table first, then change anything",
        expected=sorted(tables),
        actual=sorted(db.tables() - {"alembic_version"}),
    )
    expect_rows_kept(db, before, "after a stopped upgrade", "a stopped upgrade changes nothing")


# --- 6.7 the paged queries have their indexes -------------------------------------------------

THREAD_LIST = (
    "SELECT id FROM threads WHERE user_id = :user ORDER BY updated_at DESC, id DESC LIMIT 20"
)
HISTORY_PAGE = (
    "SELECT id FROM messages WHERE thread_id = :thread AND id < :before ORDER BY id DESC LIMIT 50"
)


@milestone("6.7")
def indexes_serve_the_paged_queries(app: App) -> None:
    """threads has an index on (user_id, updated_at, id) and messages on (thread_id, id), and
    the database answers both paged queries from them, in order, without sorting."""
    db = DbView(app.url)
    for table, columns in (
        ("threads", ["user_id", "updated_at"]),
        ("messages", ["thread_id", "id"]),
    ):
        indexes = db.indexes(table)
        expect(
            any(cols[:2] == columns for cols in indexes.values()),
            f"{table} has no index on ({', '.join(columns)}, …): create it in a migration "
            "(op.create_index), so a page is a range of the index, not a scan and a sort",
            expected=f"an index on {table} ({', '.join(columns)}{', id' if table == 'threads' else ''})",
            actual=shorten(indexes, 300) if indexes else "no index",
        )
    for sql, params, what in (
        (THREAD_LIST, {"user": str(uuid.uuid4())}, "a page of a user's threads"),
        (HISTORY_PAGE, {"thread": str(uuid.uuid4()), "before": 1000}, "a page of a thread"),
    ):
        plan = query_plan(app.url, sql, params)
        problem = plan_problem(db.kind, plan)
        expect(
            problem is None,
            f"the database's plan for {what} shows that {problem}: the index must start with "
            "the column the query filters on, then the ones it orders by",
            expected=sql,
            actual=plan,
        )


# --- 6.8 the page: log in, your threads, log out ----------------------------------------------

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


def tokens_in(value: Any) -> list[str]:
    """The JWTs anywhere in `value` (a session's values, a URL's parameters)."""
    return JWT.findall(repr(value))


def log_in_on_page(page: Page, account: Account) -> Page:
    page.fill("login_username", account.username).fill("login_password", account.password)
    return page.submit("Log in")


def expect_no_token_in_url(page: Page, when: str) -> None:
    expect(
        not tokens_in(page.query) and "token" not in " ".join(page.query).lower(),
        f"{when}, the page's URL holds the access token: a URL is kept in the browser's "
        "history, in server logs and in every link shared, so the token lives in "
        "st.session_state only",
        actual=shorten(page.query, 200),
    )


@milestone("6.8", after=registers_and_logs_in)
def page_logs_in_and_shows_your_threads(_alice: Account, app: App) -> None:
    """The page logs in through its form, lists only the caller's threads newest first, opens
    one from the sidebar, keeps the token out of the URL, and forgets it on logout."""
    from grader.toolkit.page import Page, expect_shows

    with app.http() as http:
        owner, other = new_account(http, "reader"), new_account(http, "someone_else")
    with app.chat(owner) as chat, app.chat(other) as theirs:
        older = chat.turn("My first thread, about the dragon")
        newer = chat.turn("My second thread: roll 1d6")
        hidden = theirs.turn("A thread the reader must not see").thread_id
    page = Page(app.target, app.backend.url)
    for key in ("login_username", "login_password"):
        expect(
            page.has_text_input(key),
            f"the page shows no login form: a visitor sees a form with st.text_input key={key!r} "
            "and a submit button labelled 'Log in'",
            actual=[t.key for t in page.at.text_input],
        )
    log_in_on_page(page, owner)
    expect_no_token_in_url(page, "After logging in")
    listed = [k.removeprefix("thread_") for k in page.button_keys("thread_")]
    want = [newer.thread_id, older.thread_id]
    names = {want[0]: "the newer thread", want[1]: "the older thread", hidden: "another user's"}
    expect(
        hidden not in listed,
        "the page lists another user's thread: list what GET /threads answers with the "
        "caller's token",
        actual=named(listed, names),
    )
    expect(
        listed[:2] == want,
        "after logging in, the sidebar must list the caller's threads newest first, one button "
        "per thread with key thread_<thread_id>",
        expected=named(want, names),
        actual=named(listed, names),
    )
    saved = tokens_in(page.session_values())
    expect(
        bool(saved),
        "after logging in, no access token is in st.session_state: keep the token the login "
        "answered in the session, and send it with every request",
        actual=shorten(list(page.session_values()), 200),
    )
    page.click(f"thread_{older.thread_id}")
    expect(
        same_thread(page.query.get("thread_id"), older.thread_id),
        "clicking a thread in the sidebar must open it: its id goes in the URL (thread_id)",
        expected=older.thread_id,
        actual=shorten(page.query, 200),
    )
    expect_shows(page, older.messages, "the thread opened from the sidebar is not shown whole")
    expect_no_token_in_url(page, "With a thread open")
    page.click("logout")
    expect(
        page.has_text_input("login_username") and not page.button_keys("thread_"),
        "after logout the page must show the login form again, and no thread",
        actual=f"thread buttons: {page.button_keys('thread_')}",
    )
    expect(
        not tokens_in(page.session_values()),
        "after logout the access token is still in st.session_state: logging out forgets it "
        "(del st.session_state[...]), or the next person at this browser is still you",
        actual=shorten(list(page.session_values()), 200),
    )
    newcomer = Account(fresh_name("newcomer"), f"pw-{uuid.uuid4().hex[:12]}", id="")
    page.fill("register_username", newcomer.username)
    page.fill("register_password", newcomer.password)
    # The URL still names the first user's thread (kept for a reload after logging in again):
    # for the new user it does not exist, which the page may say.
    page.submit("Register", allow_error=True)
    expect(
        not page.has_text_input("login_username") or bool(tokens_in(page.session_values())),
        "registering on the page did not log the new user in: after POST /users, log in "
        "(POST /token) with the same name and password",
    )
    expect(
        not [k for k in page.button_keys("thread_") if k.removeprefix("thread_") in names],
        "a user who just registered sees threads of others in the sidebar",
        actual=page.button_keys("thread_"),
    )
