"""Chapter 4 backend: the conversation lives in SQLite, Postgres or MySQL, not in this process."""
