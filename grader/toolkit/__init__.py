"""What milestone checks are written with (SPEC §5, "How checks are written").

- `expect`: `fail` / `expect` / `CheckFailed`, the one way a check says what went wrong;
- `chat`: `ChatApi`, the chat API client (`turn`, `history`, `clear`, `ask_first_message`,
  `ask_count`), on `Http`, which turns statuses and crashes into readable failures;
- `explain`: `explain_history` and the one-line listing of messages;
- `conversation`: `Conversation` (a thread a check wrote, handed to the next) and
  `expect_remembers` (the assistant's answers prove the turn loaded the whole thread);
- `dbview`: `DbView`, the one reader (and writer) of the `messages` table on all three databases;
- `opens`: how many connections open a SQLite file (its only view of connections);
- `load`: a load run (Locust, in its own process); `audit`: every thread it wrote, checked;
- `page`: `Page`, the one reader of a Streamlit page;
- `procs`: backends as real processes, free ports, stopping by process group;
- `causes`: what a backend's log says went wrong;
- `steps`: the step log the report prints under a failure;
- `milestone`: the decorator that makes a function a milestone's check.
"""
