# The grader's hooks and fixtures, for `grader check` and for plain `pytest grader/checks/chNN.py`.
from grader.plugin import *  # noqa: F403
from grader.plugin import (  # noqa: F401  (pytest finds hooks and fixtures by name)
    api,
    database_url,
    databases,
    grader_state,
    shared_backend,
    spawn,
    target,
)
