"""Import a slow module in the background, while the first checks wait on their backends.

Streamlit's testing API takes about a second to import. A chapter whose page checks come after
its backend checks starts that import when its module is collected: the backend checks spend
most of their time waiting on another process, so the import runs in their shadow, and the first
page check finds it done. A check that imports the module before the thread is done simply waits
for it (Python's import lock), and a run that stops early loses nothing: the thread is a daemon.
"""

from __future__ import annotations

import importlib
import threading


def in_background(module: str) -> threading.Thread:
    thread = threading.Thread(
        target=importlib.import_module, args=(module,), name=f"preload {module}", daemon=True
    )
    thread.start()
    return thread
