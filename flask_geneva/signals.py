"""Blinker signals sent while a step runs.

They are sent in this order: :data:`precondition_checked`, :data:`step_performed`,
:data:`step_finalized`. When a precondition ends the execution (a deleted hero, a true
``cancel_if``, ``skip_if``/``only_if``, or an exception there), only
:data:`precondition_checked` is sent.

The sender is the workflow class; the keyword payload is ``workflow_id``,
``workflow_class`` (the class name), ``execution_id``, ``step_name``, ``outcome``,
``exception`` (or ``None``) and ``duration`` (seconds, float). ``step_finalized`` adds
``workflow_state`` and ``step_state``.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent after the preconditions of a step were evaluated. ``outcome`` is ``"passed"``,
#: ``"skipped"``, ``"canceled"`` or ``"exception"``.
precondition_checked = _signals.signal("geneva.precondition-checked")

#: Sent after the step body returned or raised. ``outcome`` is ``"completed"``,
#: ``"cancel"``, ``"pause"``, ``"reattempt"``, ``"skip"``, ``"finish"`` or ``"exception"``.
step_performed = _signals.signal("geneva.step-performed")

#: Sent after the outcome of the step was committed.
step_finalized = _signals.signal("geneva.step-finalized")
