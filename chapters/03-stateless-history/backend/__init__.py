"""Chapter 3 backend: the conversation lives in SQLite, not in this process."""
