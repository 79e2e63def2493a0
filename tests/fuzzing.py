"""What the schema fuzzer runs share (tests/test_fuzz.py, tests/test_fuzz_ch06.py): the seed, the
bounds, schemathesis' configuration and the check that every error is JSON `{"detail": ...}`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.configuration
import schemathesis

SEED = 20240601  # one fixed seed, and derandomized Hypothesis: the same requests every run
MAX_EXAMPLES = 40  # per operation, in the fuzzing phase (examples and coverage add their own)
STATEFUL_EXAMPLES = 15  # scenarios of the stateful run, each at most STATEFUL_STEPS calls
STATEFUL_STEPS = 6
REQUEST_TIMEOUT = 10  # seconds: no request of these backends should take more than a fraction
LIMIT = 128 * 1024  # SPEC: bodies over 128 KiB get 413

# Hypothesis keeps caches (the constants of local modules, found at collection, and unicode
# tables) under `.hypothesis` of the working directory: here, the repository. Not from this
# file: in the temporary folder, unless HYPOTHESIS_STORAGE_DIRECTORY names another. At import,
# because Hypothesis' pytest plugin writes its first cache while pytest collects. No example
# database is written anywhere (`database = none` below).
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    hypothesis.configuration.set_hypothesis_home_dir(
        Path(tempfile.gettempdir()) / f"make-it-scale-hypothesis-{os.getuid()}"
    )


def fuzz_config(
    base_url: str, headers: dict[str, str] | None = None, disabled: tuple[str, ...] = ()
) -> schemathesis.Config:
    """The fuzzer's settings: `headers` on every request, the `disabled` checks left out."""
    return schemathesis.Config.from_dict(
        {
            "headers": headers or {},
            "seed": SEED,
            "base-url": base_url,
            "request-timeout": REQUEST_TIMEOUT,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",  # no example database written anywhere
            },
            "checks": {
                # SPEC §2: a thread is its messages; a cleared (or never used) thread is
                # `200 {"messages": []}`, not a 404, so "deleted resource still available"
                # does not apply. The stateful model below checks the cleared thread is empty.
                "use_after_free": {"enabled": False},
                **{check: {"enabled": False} for check in disabled},
            },
        }
    )


def error_is_json_detail(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case
) -> bool:
    """SPEC §2: every error answer is JSON `{"detail": ...}`, never a stack trace or plain text."""
    if response.status_code < 400:
        return True
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (
        f"{case.method} {case.formatted_path} answered {response.status_code} with "
        f"Content-Type {content_type!r}, not JSON: {response.content[:300]!r}"
    )
    body = json.loads(response.content)
    assert isinstance(body, dict) and "detail" in body, (
        f"{case.method} {case.formatted_path} answered {response.status_code} without a "
        f"`detail`: {response.content[:300]!r}"
    )
    return True
