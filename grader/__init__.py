"""The Make It Scale grader: milestone checks, a check50-style report, and the workbook CLI."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
