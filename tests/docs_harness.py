"""Run the code examples of the manual (``docs/**/*.md``).

The conventions, which ``docs/index.md`` ("About the examples") states for readers:

* Every fenced block has a language. ```` ```python ```` blocks are executed; every other
  language (``sh``, ``text``, ``ini``, ``toml``, ``dot``, ...) is shown, not run.
* The ``python`` blocks of one page run in order, in one namespace, in a temporary
  working directory. The namespace starts with ``app``, ``db`` and ``geneva``: a fresh
  ``SQLAlchemy()``, ``Geneva(db=db)`` and a Flask app on a SQLite file with
  ``TESTING=True`` and ``GENEVA_BROKER_URL="memory://"``, whose app context is pushed for
  the whole page. ``db.create_all()`` runs before each block, so a block can use the
  models the blocks before it defined.
* A ``python`` block with ``title="some/file.py"`` is a file of the reader's project: it is
  written to that path (under the working directory, which is on ``sys.path``) and not
  executed; later blocks import it. It must compile. A ``toml`` block with a title (a
  ``pyproject.toml``) is written the same way.
* ``<!-- docs-test: skip REASON -->`` right before a ``python`` block: the block is not
  run. The test suite lists every skipped block with its reason.
* ``<!-- docs-test: pytest PATH -->``: run ``pytest PATH`` in the working directory (in a
  subprocess) at that point of the page; it must pass. Used by the testing chapter,
  whose examples are test files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import types
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"

_FENCE_OPEN = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
_TITLE = re.compile(r"""title\s*=\s*["'](?P<title>[^"']+)["']""")


@dataclass
class CodeBlock:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the first code line
    language: str
    title: str | None
    code: str
    skip_reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(DOCS_DIR)}:{self.line}"


@dataclass
class Directive:
    """A ``<!-- docs-test: KIND ARG -->`` comment that acts on its own (``pytest``)."""

    page: Path
    line: int
    kind: str
    argument: str


@dataclass
class Page:
    path: Path
    items: list[CodeBlock | Directive] = field(default_factory=list)

    @property
    def blocks(self) -> list[CodeBlock]:
        return [item for item in self.items if isinstance(item, CodeBlock)]

    @property
    def python_blocks(self) -> list[CodeBlock]:
        return [block for block in self.blocks if block.language == "python"]


def parse_page(path: Path) -> Page:
    """Find the fenced blocks (indented ones inside admonitions too) and directives."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = Page(path)
    pending_skip: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line)
        if directive:
            kind, argument = directive["kind"], directive["arg"]
            if kind == "skip":
                if not argument:
                    raise ValueError(f"{path}:{index + 1}: docs-test: skip needs a reason")
                pending_skip = argument
            elif kind == "pytest":
                page.items.append(Directive(path, index + 1, kind, argument))
            else:
                raise ValueError(f"{path}:{index + 1}: unknown docs-test directive {kind!r}")
            index += 1
            continue
        opening = _FENCE_OPEN.match(line)
        if not opening:
            index += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        language = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        title_match = _TITLE.search(info)
        closing = re.compile(rf"^{indent}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body: list[str] = []
        index += 1
        start = index + 1
        while index < len(lines) and not closing.match(lines[index]):
            text = lines[index]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            index += 1
        if index >= len(lines):
            raise ValueError(f"{path}:{start - 1}: code fence is never closed")
        index += 1
        page.items.append(
            CodeBlock(
                page=path,
                line=start,
                language=language,
                title=title_match["title"] if title_match else None,
                code="\n".join(body) + "\n",
                skip_reason=pending_skip,
            )
        )
        if pending_skip is not None and language != "python":
            raise ValueError(
                f"{path}:{start - 1}: docs-test: skip only applies to python blocks "
                f"(this one is {language or 'without a language'} and is never run)"
            )
        pending_skip = None
    if pending_skip is not None:
        raise ValueError(f"{path}: a docs-test: skip comment is not followed by a code block")
    return page


def all_pages() -> list[Path]:
    return sorted(DOCS_DIR.rglob("*.md"))


# ------------------------------------------------------------------------- running


def _signal_receivers() -> dict[Any, set[Any]]:
    from flask_geneva import signals

    return {
        sig: set(sig.receivers)
        for sig in (signals.precondition_checked, signals.step_performed, signals.step_finalized)
    }


def _logging_state() -> dict[str, tuple[bool, int, list[logging.Handler], bool]]:
    """Every logger's configuration (Alembic's ``fileConfig`` changes them, for one)."""
    loggers: dict[str, logging.Logger] = {"": logging.getLogger()}
    for name, candidate in logging.Logger.manager.loggerDict.items():
        if isinstance(candidate, logging.Logger):
            loggers[name] = candidate
    return {
        name: (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for name, logger in loggers.items()
    }


def _restore_logging(state: dict[str, tuple[bool, int, list[logging.Handler], bool]]) -> None:
    for name, candidate in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(candidate, logging.Logger) and name not in state:
            candidate.handlers.clear()
            candidate.setLevel(logging.NOTSET)
            candidate.disabled = False
            candidate.propagate = True
    for name, (disabled, level, handlers, propagate) in state.items():
        logger = logging.getLogger(name or None)
        logger.disabled = disabled
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


@contextlib.contextmanager
def _isolated(workdir: Path) -> Iterator[None]:
    """Run in ``workdir`` (on sys.path); undo modules, signal receivers and log handlers."""
    previous_cwd = Path.cwd()
    modules_before = set(sys.modules)
    receivers_before = _signal_receivers()
    logging_before = _logging_state()
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    try:
        yield
    finally:
        os.chdir(previous_cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(workdir))
        for name in set(sys.modules) - modules_before:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(str(workdir)):
                del sys.modules[name]
        for sig, before in receivers_before.items():
            for key in set(sig.receivers) - before:
                receiver = sig.receivers.get(key)
                if isinstance(receiver, weakref.ref):
                    receiver = receiver()
                if receiver is not None:
                    sig.disconnect(receiver)
        _restore_logging(logging_before)


def _stop_embedded_workers(namespace: dict[str, Any]) -> None:
    from flask import Flask

    for value in list(namespace.values()):
        if isinstance(value, Flask) and "geneva" in value.extensions:
            value.extensions["geneva"].stop_embedded_worker()


class ExampleFailed(AssertionError):
    """An example of the manual failed; the message names the page and line."""


def run_page(path: Path, workdir: Path) -> list[CodeBlock]:
    """Run every python block of ``path``; returns the blocks that were skipped."""
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from flask_geneva import Geneva

    page = parse_page(path)
    skipped: list[CodeBlock] = []
    slug = re.sub(r"\W", "_", str(path.relative_to(DOCS_DIR).with_suffix("")))
    with _isolated(workdir), warnings.catch_warnings():
        # Flask-Migrate's generated env.py calls a deprecated Flask-SQLAlchemy method.
        warnings.filterwarnings(
            "ignore", message="'get_engine' is deprecated", category=DeprecationWarning
        )
        db = SQLAlchemy()
        geneva = Geneva(db=db)
        app = Flask(f"docs_{slug}", root_path=str(workdir))
        app.config.update(
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{workdir / 'docs.sqlite3'}",
            TESTING=True,
            GENEVA_BROKER_URL="memory://",
        )
        db.init_app(app)
        geneva.init_app(app)
        # A real module, so that SQLAlchemy can resolve the annotations of mapped classes.
        module = types.ModuleType(f"docs_{slug}")
        sys.modules[module.__name__] = module
        namespace: dict[str, Any] = module.__dict__
        namespace.update(app=app, db=db, geneva=geneva)
        context = app.app_context()
        context.push()
        try:
            for item in page.items:
                if isinstance(item, Directive):
                    _run_pytest(item, workdir)
                    continue
                if item.language == "toml" and item.title is not None:
                    target = workdir / item.title
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(item.code, encoding="utf-8")
                    continue
                if item.language != "python":
                    continue
                if item.skip_reason is not None:
                    skipped.append(item)
                    continue
                # Pad so that tracebacks point at the line of the Markdown file.
                source = "\n" * (item.line - 1) + item.code
                try:
                    code = compile(source, str(item.page), "exec")
                except SyntaxError as error:
                    raise ExampleFailed(f"{item.where}: does not compile: {error}") from error
                if item.title is not None:
                    target = workdir / item.title
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(item.code, encoding="utf-8")
                    continue
                with app.app_context():
                    db.create_all()
                try:
                    exec(code, namespace)
                except Exception as error:
                    raise ExampleFailed(
                        f"{item.where}: the example raised {type(error).__name__}: {error}"
                    ) from error
        finally:
            _stop_embedded_workers(namespace)
            with contextlib.suppress(Exception):
                db.session.remove()
            context.pop()
            with app.app_context():
                for engine in db.engines.values():
                    engine.dispose()
            sys.modules.pop(f"docs_{slug}", None)
            namespace.clear()
    return skipped


def _run_pytest(directive: Directive, workdir: Path) -> None:
    env = dict(os.environ)
    # This checkout's flask_geneva, and not the reader's directory: the page must say how
    # pytest finds the reader's modules (its pyproject.toml), as a reader's run needs.
    env["PYTHONPATH"] = str(DOCS_DIR.parent)
    completed = subprocess.run(
        [
            # The `pytest` command a reader types (`python -m pytest` would put the
            # working directory on sys.path, which `pytest` does not).
            str(Path(sys.executable).parent / "pytest"),
            "-q",
            "-p",
            "no:cacheprovider",
            *directive.argument.split(),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if completed.returncode != 0:
        raise ExampleFailed(
            f"{directive.page.relative_to(DOCS_DIR)}:{directive.line}: pytest "
            f"{directive.argument} failed:\n{completed.stdout}\n{completed.stderr}"
        )
