"""The kinds of database server, their names, and the SQLAlchemy URLs built for them."""

from __future__ import annotations

from sqlalchemy import URL, make_url

KINDS = ("postgres", "mysql")
LABELS = {"postgres": "Postgres", "mysql": "MariaDB/MySQL"}
ENV_URLS = {"postgres": "GRADER_POSTGRES_URL", "mysql": "GRADER_MYSQL_URL"}
DRIVERS = {"postgres": "postgresql+psycopg", "mysql": "mysql+pymysql"}
PACKAGES = {"postgres": "postgresql", "mysql": "mariadb-server"}

# The persistent server of `grader db up` (and the compose profiles) use these, so one
# DATABASE_URL works for both. The password holds the characters that break a hand-written URL
# (@ : / %): the URL below shows them percent-encoded, as `URL.create` renders them.
LEARNER_PORTS = {"postgres": 5433, "mysql": 3307}
LEARNER_USER = "workbook"
LEARNER_PASSWORD = "p@ss:w/rd%42"
LEARNER_DATABASE = "workbook"


def make_sqlalchemy_url(
    kind: str, user: str, password: str, host: str, port: int, database: str | None
) -> str:
    """A SQLAlchemy URL string with the password percent-encoded (never by hand)."""
    url = URL.create(
        DRIVERS[kind],
        username=user,
        password=password,
        host=host,
        port=port,
        database=database,
        query={"charset": "utf8mb4"} if kind == "mysql" else {},
    )
    return url.render_as_string(hide_password=False)


def learner_url(kind: str, port: int | None = None) -> str:
    """The DATABASE_URL of `grader db up <kind>` (and of the compose profile)."""
    return make_sqlalchemy_url(
        kind,
        LEARNER_USER,
        LEARNER_PASSWORD,
        "127.0.0.1",
        port or LEARNER_PORTS[kind],
        LEARNER_DATABASE,
    )


def kind_of_url(url: str) -> str:
    """`postgres`, `mysql`, or the backend's own name (`sqlite`) of a SQLAlchemy URL."""
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return "postgres"
    if backend in ("mysql", "mariadb"):
        return "mysql"
    return backend


def with_database(url: str, database: str | None) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def hide_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
