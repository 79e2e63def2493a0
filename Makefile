# Shortcuts; each bootstraps .venv/ on first use through bootstrap.py.
.PHONY: run test setup lock docs check verify starters

run:
	python3 bootstrap.py run

test:
	python3 bootstrap.py test

setup:
	python3 bootstrap.py setup

# After editing pyproject.toml's dependencies: update uv.lock (commit both), then reinstall.
lock:
	python3 bootstrap.py lock

docs: setup
	.venv/bin/mkdocs serve

check: setup
	.venv/bin/grader check

verify: setup
	.venv/bin/grader dev verify

starters: setup
	.venv/bin/grader dev starters
