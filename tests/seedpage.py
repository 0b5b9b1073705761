"""The seed page (``../shared/seed/use-functions-and-triggers.md``) as the seed tests read it.

What it owns: where the page is (``SEED_PAGE``), its code blocks by title (``seed_block``,
``block_titles``), the one decision that a seed test is not run (``needs_seed_page``), and
starting one of the page's Python blocks as a worker process (``seed_worker``).

The page lives beside the repository, not in it, so a clone with no ``shared/`` next to it
has no page. Invariants: every test that runs or checks the page's examples verbatim is
marked ``needs_seed_page`` (or reads a block through this module, which skips too), so
without the page it is reported as skipped with the path looked at, never failed; a block
is read from the page at test time, never from a copy kept in the repository; a block comes
back exactly as written on the page, with its indentation removed and its blank lines kept.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.harness import REPO, WorkerProcess

SEED_PAGE = REPO.parent / "shared" / "seed" / "use-functions-and-triggers.md"
MISSING = (f"seed page not found at {SEED_PAGE}: the seed tests run its examples verbatim "
           "and need the shared/ folder beside the repository")
needs_seed_page = pytest.mark.skipif(not SEED_PAGE.is_file(), reason=MISSING)
"""Mark for a test (or ``pytestmark`` of a module) that needs the page: skipped before any
fixture runs, so no engine is started for a test that cannot run."""

RUNNER = Path(__file__).resolve().parent / "e2e" / "seed" / "run_seed.py"

# A fenced block with a title, e.g. ```python title="math_add.py" theme={...}; the page
# indents blocks inside <Tab>, and the closing fence has the opening one's indentation.
_BLOCK = re.compile(r'^( *)```(\w+) title="([^"]+)"[^\n]*\n(.*?)^\1```', re.S | re.M)


def page_text() -> str:
    """The page's text; skips the calling test when the page is not there."""
    if not SEED_PAGE.is_file():
        pytest.skip(MISSING)
    return SEED_PAGE.read_text()


def _dedent(body: str, indent: int) -> str:
    # A blank line inside an indented block may carry no indentation at all: keep it as
    # an empty line rather than cutting its newline away.
    prefix = " " * indent
    return "".join(line[indent:] if line.startswith(prefix) else line.lstrip(" ")
                   for line in body.splitlines(keepends=True))


def _blocks() -> list[tuple[str, str, str]]:
    """(language, title, source) of every titled block, in page order."""
    return [(m.group(2), m.group(3), _dedent(m.group(4), len(m.group(1))))
            for m in _BLOCK.finditer(page_text())]


def block_titles(language: str) -> list[str]:
    """Titles of the page's blocks in ``language`` (``python``, ``typescript``, ...)."""
    return [title for lang, title, _ in _blocks() if lang == language]


def seed_block(title: str) -> str:
    """The code block titled ``title`` on the page, as written there."""
    for _, t, source in _blocks():
        if t == title:
            return source
    raise AssertionError(f"no block {title} on {SEED_PAGE}")


def seed_worker(title: str, url: str, timeout: float = 15.0) -> WorkerProcess:
    """The page's Python block ``title`` as a worker process (``run_seed.py``, ``III_URL`` =
    ``url``), returned once it printed ``SEED-READY``; else stopped, AssertionError."""
    worker = WorkerProcess([sys.executable, str(RUNNER), title], url, name=title,
                           stdin_text=seed_block(title))
    worker.wait_line("SEED-READY", timeout)
    return worker
