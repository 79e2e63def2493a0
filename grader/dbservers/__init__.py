"""Real Postgres and MariaDB/MySQL servers: throwaway ones for the checks, a persistent one for you.

The checks need real database servers, not mocks: a pool that leaks connections, a string that
breaks a dialect's quoting or a JSON column that mangles an emoji only shows against the real
thing. One module per concern:

- `urls`: the kinds of server, their names, drivers and packages, and every URL built from them
  (with the password percent-encoded by `URL.create`, never by hand);
- `errors`: `DatabaseUnavailable`, and the advice that ends every "no server here" message;
- `binaries`: where this machine keeps the server binaries (Debian/Ubuntu: the `postgresql` and
  `mariadb-server` packages);
- `launch`: what starting either server takes: its system user (servers refuse to run as root),
  its data folder, its one-time setup, its process on a free loopback port, ready or not;
- `server`: a running server (`Server`): fresh, empty databases on it, and stopping it by its PID;
- `start`: `start(kind)`, a Postgres or MariaDB server in a temporary (or a given) data folder;
- `session`: the server of one grader session, from `GRADER_POSTGRES_URL` / `GRADER_MYSQL_URL`
  or a throwaway one;
- `persistent`: the learner's own server of `grader db up|down` and its state file;
- `connections`: how many connections a database's server sees (for the connection-pool milestone);
- `cli`: the `grader db up|down|status|wait` commands, and `show`: `grader db show THREAD_ID`.

The process primitives (free ports, waiting, stopping a process group) are
`grader.toolkit.procs`'s, shared with the backends. Everything listens on 127.0.0.1 only.
"""
