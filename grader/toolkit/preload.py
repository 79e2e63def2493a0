"""Import a slow module in the background, while the first checks wait on their backends.

Streamlit's testing API takes about a second to import. A chapter with page checks starts that
import when its check module is collected (`in_background("grader.toolkit.page")`): the first
backends boot meanwhile, in another process. `spawn` then waits for it (`finish`) before it
hands its backends to the first check, because an import changes module-level dicts that
pytest's own code iterates between checks (CI met "dictionary changed size during iteration"):
the import may overlap a boot, never pytest's work. A chapter without page checks imports
nothing of Streamlit at all.
"""

from __future__ import annotations

import importlib
import threading

_started: list[threading.Thread] = []


def in_background(module: str) -> threading.Thread:
    thread = threading.Thread(
        target=importlib.import_module, args=(module,), name=f"preload {module}", daemon=True
    )
    thread.start()
    _started.append(thread)
    return thread


def finish(timeout: float = 60) -> None:
    """Wait for every import started in the background so far."""
    while _started:
        _started.pop().join(timeout)
