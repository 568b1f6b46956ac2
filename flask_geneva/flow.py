"""Flow-control signals: how ``cancel()``, ``pause()``, ``reattempt()``, ``skip()`` and
``finish()`` end a running step at once.

They derive from :class:`BaseException`, so ``except Exception:`` in step code does not
swallow them; the executor catches them and applies the outcome.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_geneva.policies import to_timedelta


class FlowControlSignal(BaseException):
    """Base of the signals that end a running step."""

    #: The ``step_performed`` outcome name of this signal.
    outcome: str = ""


class CancelSignal(FlowControlSignal):
    """``self.cancel()``: the workflow is canceled."""

    outcome = "cancel"


class PauseSignal(FlowControlSignal):
    """``self.pause()``: the workflow pauses; ``resume()`` runs this step again."""

    outcome = "pause"


class SkipSignal(FlowControlSignal):
    """``self.skip()``: this step is skipped and the next one scheduled."""

    outcome = "skip"


class FinishSignal(FlowControlSignal):
    """``self.finish()``: the workflow finishes now."""

    outcome = "finish"


class ReattemptSignal(FlowControlSignal):
    """``self.reattempt(wait)``: this step runs again after ``wait``."""

    outcome = "reattempt"

    def __init__(self, wait: Any = None) -> None:
        super().__init__(wait)
        self.wait: timedelta = timedelta(0) if wait is None else to_timedelta(
            wait, "reattempt(wait=...)"
        )
