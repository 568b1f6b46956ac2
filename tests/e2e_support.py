"""Real ``dramatiq`` worker processes for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcesses:
    """``dramatiq tests.e2e_app:broker`` with its own environment; stop() kills it."""

    def __init__(
        self,
        env: dict[str, str],
        processes: int = 2,
        threads: int = 4,
        module: str = "tests.e2e_app:broker",
        queue: str | None = None,
    ) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.module = module
        self.queue = queue or self.env["E2E_QUEUE"]
        self.processes = processes
        self.threads = threads
        self.lines: list[str] = []
        self._ready = threading.Semaphore(0)
        self.popen: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> WorkerProcesses:
        self.popen = subprocess.Popen(
            [
                sys.executable, "-m", "dramatiq", self.module,
                "--processes", str(self.processes), "--threads", str(self.threads),
                "--queues", self.queue,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        for _ in range(self.processes):
            if not self._ready.acquire(timeout=timeout):
                self.stop()
                raise RuntimeError("dramatiq workers did not start:\n" + self.output())
        return self

    def _read(self) -> None:
        assert self.popen is not None and self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            if "Worker process is ready for action" in line:
                self._ready.release()

    def output(self) -> str:
        return "".join(self.lines[-200:])

    def kill(self) -> None:
        """SIGKILL every process of the worker group at once (a crash)."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        """Stop the workers gracefully, or kill them if they do not stop."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_until(
    condition: Callable[[], Any], timeout: float = 60.0, message: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


def terminate_other_connections(session: Any) -> None:
    """End every connection to ``session``'s database but its own (the workers' and
    relays'), on PostgreSQL or MariaDB, commit, and drop the caller's pooled
    connections so that its next query opens a live one."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    else:
        others = session.scalars(
            sa.text(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        ).all()
        for connection_id in others:
            try:
                session.execute(sa.text(f"KILL CONNECTION {int(connection_id)}"))
            except sa.exc.OperationalError as error:  # 1094: it closed meanwhile
                if error.orig is None or error.orig.args[0] != 1094:
                    raise
    session.commit()
    # The caller's pool may hold other connections of its own (a relay thread's, an
    # earlier checkout's) that were just ended; its next checkout must not draw one.
    session.get_bind().dispose()
