"""Import a slow module in the background, while the first checks wait on their backends.

Streamlit's testing API takes about a second of CPU to import. A chapter with page checks asks
for it when its check module is collected (`in_background("grader.toolkit.page", "3.3")`,
naming the milestones whose checks use it); once collection knows which milestones will run,
the plugin starts the import (`start`) if one of them is among them, and the first backends
boot meanwhile, in another process. A run of other milestones (`--milestone 3.1`, as every
mutant test of the repository does) imports nothing of Streamlit at all. `spawn` waits for the
import (`finish`) before it hands its backends to the first check, because an import changes
module-level dicts that pytest's own code iterates between checks (CI met "dictionary changed
size during iteration"): the import may overlap a boot, never pytest's work.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable

_wanted: list[tuple[str, frozenset[str]]] = []
_started: list[threading.Thread] = []


def in_background(module: str, *milestones: str) -> None:
    """Import `module` in the background if one of `milestones` is to be checked."""
    _wanted.append((module, frozenset(milestones)))


def start(selected: Iterable[str]) -> None:
    """Start the imports the milestones `selected` (those about to be checked) need."""
    selected = set(selected)
    for module, milestones in _wanted:
        if milestones & selected:
            thread = threading.Thread(
                target=importlib.import_module,
                args=(module,),
                name=f"preload {module}",
                daemon=True,
            )
            thread.start()
            _started.append(thread)
    _wanted.clear()


def finish(timeout: float = 60) -> None:
    """Wait for every import started in the background so far."""
    while _started:
        _started.pop().join(timeout)
