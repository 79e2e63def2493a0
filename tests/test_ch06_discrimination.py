"""Chapter 6's checks catch the classic mistakes with users, tokens, ownership and paging, and
say which one it is.

Each mutant is the chapter 6 solution with one fault (see tests/mutants.py); it must fail its
milestone with a `why` naming the fault, every milestone it depends on passing (each milestone
of this chapter makes its own databases and backends, so only those are graded).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mutants import SOLUTIONS, Edit, Mutant, caught, derive, grade

CHAPTER, SLUG = 6, "06-users-and-migrations"
AUTH, MAIN, STORE = "backend/auth.py", "backend/main.py", "backend/store.py"
SETTINGS, ERRORS, KEYS = "backend/settings.py", "backend/errors.py", "backend/idempotency.py"
HASH = "    return password_hash.hash(password)\n"
VERIFY = "    return password_hash.verify(password, stored)\n"
DECODE_OPTIONS = 'algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}'
OWNER = ", threads.c.user_id == user_id"
SERVED = r"was served"

MUTANTS = {
    # 6.1: passwords
    "plaintext-password": Mutant(
        "plaintext-password",
        (
            Edit(AUTH, HASH, "    return password\n"),
            Edit(AUTH, VERIFY, "    return password == stored\n"),
        ),
        fails="6.1",
        says=r"holds the password as it was sent",
    ),
    "unsalted-sha256": Mutant(
        "unsalted-sha256",
        (
            Edit(
                AUTH,
                HASH,
                "    return __import__('hashlib').sha256(password.encode()).hexdigest()\n",
            ),
            Edit(AUTH, VERIFY, "    return hash_password(password) == stored\n"),
        ),
        fails="6.1",
        says=r"holds the sha256 of the password",
    ),
    "password-in-422": Mutant(
        "password-in-422",
        (
            Edit(
                ERRORS, 'excerpt(hidden(error.get("input"), error))', 'excerpt(error.get("input"))'
            ),
        ),
        fails="6.1",
        says=r"repeats the password",
    ),
    "lower-cased-usernames": Mutant(
        "lower-cased-usernames",
        (
            Edit(
                MAIN,
                "store.add_user(db, body.username, password_hash)",
                "store.add_user(db, body.username.lower(), password_hash)",
            ),
        ),
        fails="6.1",
        says=r"usernames are exact and case-sensitive",
    ),
    "unknown-user-told-apart": Mutant(
        "unknown-user-told-apart",
        (
            Edit(
                MAIN,
                "        user = store.find_user(db, form.username)\n",
                "        user = store.find_user(db, form.username)\n"
                "    if user is None:\n"
                '        raise HTTPException(401, "no such user", headers={"WWW-Authenticate": "Bearer"})\n',
            ),
        ),
        fails="6.1",
        says=r"answers an unknown username and a wrong password differently",
    ),
    # 6.1: tokens
    "signature-not-verified": Mutant(
        "signature-not-verified",
        (
            Edit(
                AUTH,
                f"token, signing_key(), {DECODE_OPTIONS}",
                'token, options={"verify_signature": False}',
            ),
        ),
        fails="6.1",
        says=r"a token signed with another key was served",
    ),
    "expiry-not-checked": Mutant(
        "expiry-not-checked",
        (
            Edit(
                AUTH,
                DECODE_OPTIONS,
                'algorithms=[ALGORITHM], options={"verify_exp": False, "require": ["sub"]}',
            ),
        ),
        fails="6.1",
        says=r"a token that expired 2 minutes ago was served",
    ),
    "exp-not-required": Mutant(
        "exp-not-required",
        (Edit(AUTH, DECODE_OPTIONS, "algorithms=[ALGORITHM]"),),
        fails="6.1",
        says=r'a token without "exp" was served',
    ),
    "body-checked-before-token": Mutant(  # FastAPI's tutorial way: a dependency does it all
        "body-checked-before-token",
        (
            Edit(MAIN, "app.add_middleware(auth.RequireToken)\n", ""),
            Edit(
                AUTH,
                "    return request.state.user_id\n",
                "    user_id = verified_user(_token)\n"
                "    if user_id is None:\n"
                "        from fastapi import HTTPException\n\n"
                '        raise HTTPException(401, "bad token", headers={"WWW-Authenticate": "Bearer"})\n'
                "    return user_id\n",
            ),
        ),
        fails="6.1",
        says=r"no token and a body that is not JSON answered 422: check the token before the body",
    ),
    # A key that is not SECRET_KEY: the grader's own tokens fail (6.1) before 6.2 runs.
    "key-per-process": Mutant(
        "key-per-process",
        (
            Edit(
                SETTINGS,
                '    return secret_key(os.environ.get("SECRET_KEY"), os.environ.get("DEV_MODE") == "1")\n',
                "    return __import__('secrets').token_urlsafe(32)\n",
            ),
        ),
        fails="6.1",
        says=r"sign and check tokens with SECRET_KEY from the environment",
    ),
    "key-in-the-code": Mutant(
        "key-in-the-code",
        (
            Edit(
                SETTINGS,
                '    return secret_key(os.environ.get("SECRET_KEY"), os.environ.get("DEV_MODE") == "1")\n',
                "    return DEV_SECRET_KEY\n",
            ),
        ),
        fails="6.1",
        says=r"sign and check tokens with SECRET_KEY from the environment",
    ),
    "starts-without-a-key": Mutant(
        "starts-without-a-key",
        (
            Edit(
                SETTINGS,
                "        if dev_mode:\n            return DEV_SECRET_KEY\n",
                "        return DEV_SECRET_KEY\n",
            ),
        ),
        fails="6.2",
        says=r"the backend started without SECRET_KEY",
    ),
    # 6.3: ownership
    "read-without-owner": Mutant(
        "read-without-owner",
        (
            Edit(
                STORE,
                f"threads.c.id == str(thread_id){OWNER})\n    return db.fetchone",
                "threads.c.id == str(thread_id))\n    return db.fetchone",
            ),
        ),
        fails="6.3",
        says=r"GET /history/\S+ on another user's thread " + SERVED,
    ),
    "turn-without-owner": Mutant(
        "turn-without-owner",
        (
            Edit(
                STORE,
                f"        .where(threads.c.id == str(thread_id){OWNER})\n        .values(turns",
                "        .where(threads.c.id == str(thread_id))\n        .values(turns",
            ),
        ),
        fails="6.3",
        says=r"POST /chat on another user's thread " + SERVED,
    ),
    "delete-without-owner": Mutant(
        "delete-without-owner",
        (
            Edit(
                MAIN,
                "        if not store.owns_thread(db, user_id, thread_id):\n"
                "            raise store.not_found(thread_id)\n"
                "        store.clear_thread(db, thread_id)\n",
                "        store.clear_thread(db, thread_id)\n",
            ),
        ),
        fails="6.3",
        says=r"DELETE /history/\S+ on another user's thread " + SERVED,
    ),
    "403-not-404": Mutant(
        "403-not-404",
        (Edit(STORE, "HTTPException(status_code=404", "HTTPException(status_code=403"),),
        fails="6.3",
        says=r"answered 403: that tells the caller the thread exists",
    ),
    "keys-not-per-user": Mutant(
        "keys-not-per-user",
        (Edit(KEYS, 'sha256(f"{user_id}:{key}")', "sha256(key)"),),
        fails="6.3",
        says=r"got the first user's answer replayed",
    ),
    # 6.4: the thread list
    "list-every-users-threads": Mutant(
        "list-every-users-threads",
        (
            Edit(
                STORE,
                "        .where(threads.c.user_id == user_id)\n        .order_by",
                "        .order_by",
            ),
        ),
        fails="6.4",
        says=r"listed a thread of another user",
    ),
    "ordered-by-creation": Mutant(
        "ordered-by-creation",
        (
            Edit(
                STORE,
                ".order_by(threads.c.updated_at.desc(), threads.c.id.desc())",
                ".order_by(threads.c.created_at.desc(), threads.c.id.desc())",
            ),
            Edit(
                STORE,
                "                threads.c.updated_at < after,\n                and_(threads.c.updated_at == after,",
                "                threads.c.created_at < after,\n                and_(threads.c.created_at == after,",
            ),
            Edit(
                STORE,
                'encode_cursor(as_utc(last["updated_at"]), last["id"])',
                'encode_cursor(as_utc(last["created_at"]), last["id"])',
            ),
        ),
        fails="6.4",
        says=r"a thread that just got a turn must move to the front",
    ),
    "title-follows-latest-prompt": Mutant(
        "title-follows-latest-prompt",
        (
            Edit(
                STORE,
                ".values(updated_at=now))",
                ".values(updated_at=now, title=prompt[:TITLE_CHARS]))",
            ),
        ),
        fails="6.4",
        says=r"title changed after a later turn",
    ),
    "inclusive-cursor": Mutant(
        "inclusive-cursor",
        (Edit(STORE, "threads.c.id < after_id", "threads.c.id <= after_id"),),
        fails="6.4",
        says=r"the last thread of a page came again first on the next: the cursor is exclusive",
    ),
    "offset-pagination": Mutant(
        "offset-pagination",
        (
            Edit(
                STORE,
                "    if cursor is not None:\n        after, after_id = decode_cursor(cursor)\n",
                "    if cursor is not None and not cursor.isdigit():\n"
                "        raise __import__('backend.paging').paging.BadCursor('bad cursor')\n"
                "    offset = int(cursor or 0)\n"
                "    query = query.offset(offset)\n"
                "    if False:\n        after, after_id = decode_cursor(cursor)\n",
            ),
            Edit(
                STORE,
                'encode_cursor(as_utc(last["updated_at"]), last["id"]) if more and last else None',
                "str(offset + limit) if more and last else None",
            ),
        ),
        fails="6.4",
        says=r"page 2 repeated threads of page 1 after new threads were made",
    ),
    "bad-cursor-500": Mutant(
        "bad-cursor-500",
        (
            Edit(
                STORE,
                "        after, after_id = decode_cursor(cursor)\n",
                "        after, after_id = __import__('json').loads(cursor)\n",
            ),
        ),
        fails="6.4",
        says=r"GET /threads with a cursor it never gave answered 500",
    ),
    # 6.5: history pages
    "inclusive-before": Mutant(
        "inclusive-before",
        (Edit(STORE, "messages.c.id < before", "messages.c.id <= before"),),
        fails="6.5",
        says=r"repeated a message: `before` is exclusive",
    ),
    "next-before-newest": Mutant(
        "next-before-newest",
        (
            Edit(
                STORE,
                'return page, (page[0]["id"] if older else None)',
                'return page, (page[-1]["id"] if older else None)',
            ),
        ),
        fails="6.5",
        says=r"next_before must be the id of the page's oldest message",
    ),
    "page-newest-first": Mutant(
        "page-newest-first",
        (
            Edit(
                STORE,
                "    page = rows[:limit][::-1]\n",
                "    page = rows[:limit]\n    page = page[::-1] if limit is None else page\n",
            ),
        ),
        fails="6.5",
        says=r"GET /history\?limit=4 must answer the thread's 4 newest messages, oldest first",
    ),
    "oldest-page-first": Mutant(
        "oldest-page-first",
        (
            Edit(
                STORE,
                "        .order_by(messages.c.id.desc())\n    )\n    if before",
                "        .order_by(messages.c.id)\n    )\n    if before",
            ),
            Edit(STORE, "    page = rows[:limit][::-1]\n", "    page = rows[:limit]\n"),
        ),
        fails="6.5",
        says=r"GET /history\?limit=4 must answer the thread's 4 newest messages",
    ),
}


@pytest.mark.parametrize("mutant", [m.param() for m in MUTANTS.values()])
def test_a_wrong_implementation_fails_its_milestone(mutant: Mutant, tmp_path: Path) -> None:
    caught(CHAPTER, SLUG, mutant, tmp_path, only_needs=True)


ADOPT = "migrations/versions/0001_adopt_chapter_5_layout.py"
OWN = "migrations/versions/0003_owned_threads.py"
INDEXES = "migrations/versions/0004_indexes.py"

MIGRATION_MUTANTS = {
    "recreates-messages": Mutant(
        "recreates-messages",
        (
            Edit(
                ADOPT,
                '    if "messages" not in existing:\n',
                '    if "messages" in existing:\n        op.drop_table("messages")\n    if True:\n',
            ),
        ),
        fails="6.6",
        says=r"the messages table is empty after `alembic upgrade head`",
    ),
    "old-threads-left-out": Mutant(
        "old-threads-left-out",
        (
            Edit(
                OWN,
                "    bind.execute(\n        sa.insert(threads).from_select(",
                "    0 and bind.execute(\n        sa.insert(threads).from_select(",
            ),
        ),
        fails="6.6",
        says=r"the legacy owner .* cannot log in: the migration must create that user .* give it "
        r"every thread",
    ),
    "todo-6.6-undone": Mutant(
        "todo-6.6-undone",
        (
            Edit(
                OWN,
                "    if unowned:\n        owner = legacy_owner_id(bind)\n",
                '    if unowned:\n        raise NotImplementedError("TODO 6.6")\n        owner = legacy_owner_id(bind)\n',
            ),
        ),
        fails="6.6",
        says=r"`alembic upgrade head` reached TODO 6.6, which is not done yet",
    ),
    "guessable-legacy-password": Mutant(
        "guessable-legacy-password",
        (
            Edit(
                OWN,
                'os.environ.get("LEGACY_OWNER_PASSWORD") or secrets.token_urlsafe(32)',
                'os.environ.get("LEGACY_OWNER_PASSWORD") or "legacy"',
            ),
        ),
        fails="6.6",
        says=r"the legacy owner logs in with the password 'legacy'",
    ),
    "downgrade-drops-messages": Mutant(
        "downgrade-drops-messages",
        (
            Edit(
                ADOPT,
                "would use them. A downgrade that dropped them would delete the data it adopted.\n    pass\n",
                'would use them. A downgrade that dropped them would delete the data it adopted.\n    op.drop_table("messages")\n',
            ),
        ),
        fails="6.6",
        says=r"the messages table is gone after `alembic downgrade base`",
    ),
    "create-all-at-startup": Mutant(
        "create-all-at-startup",
        (
            Edit(
                MAIN,
                "        expect_head(engine)\n",
                "        __import__('backend.tables').tables.metadata.create_all(engine)\n",
            ),
        ),
        fails="6.6",
        says=r"the backend started on a chapter 4 database no migration has upgraded",
    ),
    "no-layout-check": Mutant(
        "no-layout-check",
        (
            Edit(
                ADOPT,
                "    for table in LATER_TABLES & existing:\n",
                "    for table in LATER_TABLES & existing - existing:\n",
            ),
        ),
        fails="6.6",
        says=r"only after it had changed the database",
    ),
    "no-thread-index": Mutant(
        "no-thread-index",
        (
            Edit(
                INDEXES,
                '    op.create_index("threads_user_id_updated_at_id", "threads", ["user_id", "updated_at", "id"])\n',
                "",
            ),
        ),
        fails="6.7",
        says=r"threads has no index on \(user_id, updated_at, …\)",
    ),
    "index-columns-swapped": Mutant(
        "index-columns-swapped",
        (
            Edit(
                INDEXES,
                '"threads", ["user_id", "updated_at", "id"]',
                '"threads", ["updated_at", "user_id", "id"]',
            ),
        ),
        fails="6.7",
        says=r"threads has no index on \(user_id, updated_at, …\)",
    ),
}


@pytest.mark.parametrize("mutant", [m.param() for m in MIGRATION_MUTANTS.values()])
def test_a_wrong_migration_fails_its_milestone(mutant: Mutant, tmp_path: Path) -> None:
    caught(CHAPTER, SLUG, mutant, tmp_path, only_needs=True)


WHOLE_SECONDS = Mutant(
    "whole-seconds-on-mysql",
    (
        Edit(
            OWN,
            'Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")',
            "Timestamp = sa.DateTime()",
        ),
    ),
    fails="6.4",
    says=r"Every updated_at is a whole second",
)


@pytest.mark.databases
def test_whole_second_timestamps_on_mysql_fail_the_thread_list(tmp_path: Path) -> None:
    """MySQL's plain DATETIME keeps whole seconds: threads made within one second tie, and
    "newest first" becomes the order of their random ids."""
    caught(CHAPTER, SLUG, WHOLE_SECONDS, tmp_path, db="mysql", only_needs=True)


PAGE = "frontend/app.py"
KEEP_TOKEN = '    st.session_state.token = answer.json()["access_token"]\n'

PAGE_MUTANTS = {
    "token-in-the-url": Mutant(
        "token-in-the-url",
        (
            Edit(
                PAGE,
                KEEP_TOKEN,
                KEEP_TOKEN + '    st.query_params["token"] = st.session_state.token\n',
            ),
        ),
        fails="6.8",
        says=r"After logging in, the page's URL holds the access token",
    ),
    "token-kept-after-logout": Mutant(
        "token-kept-after-logout",
        (
            Edit(
                PAGE,
                '    st.session_state.pop("token", None)\n    st.session_state.pop("username", None)\n',
                '    st.session_state.last_token = st.session_state.pop("token", None)\n'
                '    st.session_state.pop("username", None)\n',
            ),
        ),
        fails="6.8",
        says=r"after logout the access token is still in st.session_state",
    ),
}


@pytest.mark.parametrize("mutant", [m.param() for m in PAGE_MUTANTS.values()])
def test_a_wrong_page_fails_its_milestone(mutant: Mutant, tmp_path: Path) -> None:
    caught(CHAPTER, SLUG, mutant, tmp_path, only_needs=True)


# Right but different: choices the SPEC leaves open, made the other way at once.
RIGHT_BUT_DIFFERENT = (
    # POST /chat answers carry the stored messages' ids (SPEC: answers may carry them).
    Edit(
        STORE,
        "    db.execute(insert(messages), rows)\n",
        "    db.execute(insert(messages), rows)\n"
        "    newest = db.fetchall(\n"
        "        select(messages.c.id).where(messages.c.thread_id == str(thread_id))\n"
        "        .order_by(messages.c.id.desc()).limit(len(rows))\n"
        "    )\n"
        '    return [row["id"] for row in reversed(newest)]\n',
    ),
    Edit(
        MAIN,
        "        reply = ChatReply(thread_id=thread_id, messages=[user_message, *new_messages])\n"
        "        store.append_messages(db, thread_id, [user_message, *new_messages])\n",
        "        turn = [user_message, *new_messages]\n"
        "        ids = store.append_messages(db, thread_id, turn)\n"
        '        stored = [{**m, "id": i} for m, i in zip(turn, ids, strict=True)]\n'
        "        reply = ChatReply(thread_id=thread_id, messages=stored)\n",
    ),
    Edit(
        "backend/models.py",
        "    messages: list[Message]  # what this turn",
        '    messages: list["StoredMessage"]  # what this turn',
    ),
    # DELETE /history removes the thread itself, so it leaves the list (SPEC: either way).
    Edit(
        STORE,
        "    db.execute(delete(messages).where(messages.c.thread_id == str(thread_id)))\n",
        "    db.execute(delete(messages).where(messages.c.thread_id == str(thread_id)))\n"
        "    db.execute(delete(threads).where(threads.c.id == str(thread_id)))\n",
    ),
    # Tokens with more claims than the three the SPEC requires.
    Edit(
        AUTH,
        'claims = {"sub": user_id,',
        'claims = {"typ": "access", "jti": uuid4().hex, "sub": user_id,',
    ),
    Edit(AUTH, "import functools\n", "import functools\nfrom uuid import uuid4\n"),
)


def test_a_right_but_different_solution_passes(tmp_path: Path) -> None:
    target = derive(SOLUTIONS / SLUG, tmp_path / "different", RIGHT_BUT_DIFFERENT, "different")
    graded = grade(CHAPTER, target, tmp_path)
    assert set(graded.statuses.values()) == {"passed"}, graded.output
