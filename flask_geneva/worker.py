"""The Dramatiq side: the app's broker, the step actor, and worker-process middleware.

A worker is a plain Dramatiq worker: ``dramatiq mymodule:broker`` where ``mymodule``
creates the app and sets ``broker = app.extensions["geneva"].broker``. Each step message
runs in an app context (so with a fresh ``db.session``); Dramatiq's retries are off for
the step actor, because geneva owns retries.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any, Final

import dramatiq
from dramatiq.middleware import TimeLimit
from flask import Flask

from flask_geneva.brokers import broker_problem, make_broker, redact_url
from flask_geneva.config import GenevaConfig, is_memory_broker
from flask_geneva.logs import OutageLog
from flask_geneva.wakeups import BrokerWakeups

if TYPE_CHECKING:
    from flask_geneva.extension import Geneva
    from flask_geneva.relay import Relay

logger = logging.getLogger("flask_geneva")

#: The name of the step actor (priority 0); other priorities get ``geneva_step_p<N>``.
STEP_ACTOR_NAME: Final = "geneva_step"
#: The name of the housekeeping actor.
HOUSEKEEPING_ACTOR_NAME: Final = "geneva_housekeeping"
#: How long idle embedded worker threads wait for a message before looking again (ms).
EMBEDDED_WORKER_TIMEOUT_MS: Final = 100

#: The Dramatiq message being processed by this thread (its id is recorded on the claim;
#: an inline run restarts its time limit for each step).
current_message: contextvars.ContextVar[dramatiq.MessageProxy | None] = contextvars.ContextVar(
    "geneva_current_message", default=None
)


def _in_reloader_watcher(app: Flask) -> bool:
    """True in the process of ``flask run --reload`` that only watches files.

    ``flask run`` marks its processes with ``FLASK_RUN_FROM_CLI``; with the reloader on
    (``--reload``, or ``--debug``), the process that serves is the child Werkzeug starts
    with ``WERKZEUG_RUN_MAIN=true``; the watcher has no such mark.
    """
    from werkzeug.serving import is_running_from_reloader

    if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        return False
    reload = _flask_run_reloads(app)
    return reload and not is_running_from_reloader()


def _flask_run_reloads(app: Flask) -> bool:
    """Whether this ``flask run`` uses the reloader (``--reload``, or debug without
    ``--no-reload``)."""
    import sys

    args = sys.argv[1:]
    if "--no-reload" in args:
        return False
    return "--reload" in args or app.debug or "--debug" in args


def _show_step_logs() -> None:
    """Let the steps' ``self.logger`` lines reach the terminal of an embedded app.

    A ``dramatiq`` worker configures logging itself; ``flask run`` only gives
    ``app.logger`` a handler. So, as Flask does for ``app.logger``, when nothing would
    show the ``flask_geneva`` logger's INFO lines, it gets Flask's default handler (on
    ``wsgi_errors_stream``) and the INFO level. Configure logging (``logging.basicConfig``
    or ``dictConfig``) before the first request to decide otherwise.
    """
    from flask.logging import default_handler, has_level_handler

    if has_level_handler(logger):
        return  # the application configured logging: its choice
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.addHandler(default_handler)


class GenevaMiddleware(dramatiq.Middleware):
    """Worker-process duties: fresh engines after fork, the relay, the current message."""

    def __init__(self, state: GenevaState) -> None:
        self.state = state
        #: Set in a ``dramatiq`` worker process (not an embedded worker's).
        self.in_worker_process = False

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self.in_worker_process = True
        # Connections inherited from a parent process must not be shared: drop them.
        self.state.dispose_engines()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.in_worker_process and is_memory_broker(self.state.config.broker_url):
            logger.error(
                "this dramatiq worker uses the in-process broker (GENEVA_BROKER_URL=%s): "
                "no other process can send it a step, so %s. Give it the broker your web "
                "processes publish to (GENEVA_BROKER_URL=redis://..., or "
                "FLASK_GENEVA_BROKER_URL with app.config.from_prefixed_env()), or leave "
                "the steps to the web process's embedded worker and stop this one",
                self.state.config.broker_url,
                "it runs none (the embedded worker's app leaves them to the web process)"
                if not self.state.can_deliver
                else "it runs only what its own relay republishes, once the steps look "
                "lost (GENEVA_RELAY_REPUBLISH_AFTER): late",
            )
        problem = broker_problem(broker)
        if problem is not None:
            logger.error(
                "this worker cannot reach its broker (GENEVA_BROKER_URL=%s): %s. It runs no "
                "steps until the broker answers; start the broker or fix GENEVA_BROKER_URL",
                redact_url(self.state.config.broker_url),
                problem,
            )
        self.state.warm_up()
        if self.state.config.relay_in_workers and not self.state.embedded_running:
            self.state.start_relay()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.state.stop_relay()

    def before_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy
    ) -> None:
        current_message.set(message)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        current_message.set(None)


class GenevaState:
    """Per-app state, stored in ``app.extensions["geneva"]``.

    :ivar broker: the app's Dramatiq broker.
    :ivar step_actor: the step actor; ``step_actor.send(execution_id)`` is a step message.
    :ivar housekeeping_actor: an actor that runs housekeeping, for schedulers.
    :ivar config: the :class:`~flask_geneva.config.GenevaConfig` read by ``init_app``.
    """

    def __init__(self, geneva: Geneva, app: Flask, config: GenevaConfig) -> None:
        self.geneva = geneva
        self.app = app
        self.config = config
        # Its step-queue consumers poll every GENEVA_WORKER_IDLE_TIMEOUT_MS at most.
        self.broker = make_broker(
            config.broker_url, idle_timeout_ms=config.worker_idle_timeout_ms
        )
        self.broker.add_middleware(GenevaMiddleware(self))
        #: Wake-ups for the relays of other processes, where the database cannot send
        #: them (MariaDB, MySQL; with a Redis broker): see :mod:`flask_geneva.wakeups`.
        self.wakeups = BrokerWakeups.for_app(
            self.broker,
            (app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}).get("url")
            or app.config.get("SQLALCHEMY_DATABASE_URI"),
        )
        if dramatiq.broker.global_broker is None:
            # So that `dramatiq mymodule` (without `:broker`) runs this app's steps rather
            # than consume Dramatiq's default broker; the first app set up in a process
            # wins, and a global broker the application set itself is left alone.
            dramatiq.set_broker(self.broker)
        self._actors_by_priority: dict[int, dramatiq.Actor[Any, Any]] = {}
        self._lock = threading.Lock()
        self.step_actor = self._actor_for_priority(0)
        self.housekeeping_actor = dramatiq.Actor(
            self._perform_housekeeping,
            broker=self.broker,
            actor_name=HOUSEKEEPING_ACTOR_NAME,
            queue_name=config.default_queue,
            priority=0,
            options={"max_retries": 0},
        )
        for cls in list(geneva.workflow_classes.values()):
            self.declare_queue_for(cls)
        self._relay: Relay | None = None
        self._embedded_worker: dramatiq.Worker | None = None
        self._embedded_pid: int | None = None
        #: One warning per broker outage for the messages published after a commit.
        self.publish_outage = OutageLog(logger, "publishing step messages to the broker")

    # ------------------------------------------------------------------ actors

    def _actor_for_priority(self, priority: int) -> dramatiq.Actor[Any, Any]:
        with self._lock:
            actor = self._actors_by_priority.get(priority)
            if actor is None:
                name = STEP_ACTOR_NAME if priority == 0 else f"{STEP_ACTOR_NAME}_p{priority}"
                actor = dramatiq.Actor(
                    self._perform_step,
                    broker=self.broker,
                    actor_name=name,
                    queue_name=self.config.default_queue,
                    priority=priority,
                    options={"max_retries": 0},
                )
                self._actors_by_priority[priority] = actor
            return actor

    def declare_queue_for(self, workflow_class: type) -> None:
        """Declare the queue and actor a workflow class's step messages need."""
        options = workflow_class._geneva_definition.job_options  # type: ignore[attr-defined]
        queue = options.get("queue_name", self.config.default_queue)
        self.broker.declare_queue(queue)
        self._actor_for_priority(int(options.get("priority", 0)))

    def message_options_for(self, workflow_class: type | None) -> tuple[str, int, int | None]:
        """``(queue_name, priority, time_limit_ms)`` for a workflow class's step messages."""
        options: dict[str, Any] = {}
        if workflow_class is not None:
            options = workflow_class._geneva_definition.job_options  # type: ignore[attr-defined]
        return (
            options.get("queue_name", self.config.default_queue),
            int(options.get("priority", 0)),
            options.get("time_limit"),
        )

    def _perform_step(self, execution_id: Any) -> None:
        """Run a step message, and the workflow's next steps inline when they are due at
        once (:mod:`flask_geneva.inline`)."""
        from flask_geneva.inline import run_message

        message = current_message.get()
        run_message(
            self.app,
            self.geneva,
            execution_id,
            message_id=message.message_id if message is not None else None,
            budget=self.config.inline_steps,
            before_next=lambda: self._restart_time_limit(message),
        )

    def _restart_time_limit(self, message: dramatiq.MessageProxy | None) -> None:
        """Give the next step of an inline run the whole time limit a step run from its
        own message gets: Dramatiq's ``TimeLimit`` middleware counts from the message's
        start, which would leave a later step only what the earlier ones did not use."""
        if message is None:
            return
        for middleware in self.broker.middleware:
            if isinstance(middleware, TimeLimit):
                # Its own hooks: ending the message's timer first, then starting one
                # (gevent's timers would otherwise all stay armed).
                middleware.after_process_message(self.broker, message)
                middleware.before_process_message(self.broker, message)

    def warm_up(self) -> None:
        """Compile the step hot path's statements now rather than in the first steps;
        a database that is not there yet is no reason to fail the worker's boot."""
        from flask_geneva.store import store_for

        try:
            with self.app.app_context():
                session = self.geneva.db.session
                store_for(self.geneva, session).warm_up(session)
        except Exception:
            logger.debug("could not warm up the step statements", exc_info=True)

    def _perform_housekeeping(self) -> None:
        from flask_geneva.housekeeping import run_housekeeping

        with self.app.app_context():
            run_housekeeping()

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        execution_id: Any,
        queue_name: str,
        priority: int = 0,
        time_limit_ms: int | None = None,
    ) -> str:
        """Send the step message for ``execution_id``; returns the message id."""
        actor = self._actor_for_priority(priority)
        options: dict[str, Any] = {}
        if time_limit_ms is not None:
            options["time_limit"] = time_limit_ms
        wire_id = str(execution_id) if isinstance(execution_id, uuid.UUID) else execution_id
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue_name,
            actor_name=actor.actor_name,
            args=(wire_id,),
            kwargs={},
            options=options,
        )
        self.broker.enqueue(message)
        return message.message_id

    # ------------------------------------------------------------------ processes

    def dispose_engines(self) -> None:
        """Drop pooled connections (after a fork) without closing the parent's sockets."""
        with self.app.app_context():
            for engine in self.geneva.db.engines.values():
                engine.dispose(close=False)

    @property
    def relay(self) -> Relay:
        """The outbox relay of this process (created on first use)."""
        from flask_geneva.relay import Relay

        with self._lock:
            if self._relay is None:
                self._relay = Relay(self)
            return self._relay

    def start_relay(self) -> None:
        """Run the outbox relay in a background thread of this process."""
        self.relay.start()

    def stop_relay(self) -> None:
        """Stop this process's relay thread, if it runs."""
        if self._relay is not None:
            self._relay.stop()

    def wake_relay(self) -> None:
        """Tell this process's relay that new outbox rows were committed (and the
        relays of other processes, through :attr:`wakeups`, where there are some)."""
        if self._relay is not None:
            self._relay.wake()
        if self.wakeups is not None:
            self.wakeups.announce()

    # ------------------------------------------------------------------ embedded

    @property
    def embedded_running(self) -> bool:
        return self._embedded_worker is not None and self._embedded_pid == os.getpid()

    @property
    def can_deliver(self) -> bool:
        """Whether a message published by this process reaches a worker.

        False only for the in-process ``memory://`` broker of an app that runs its worker
        embedded, in a process where it does not run (the ``flask geneva`` CLI, ``flask
        shell``): such a process leaves its outbox rows to the serving process's relay.
        """
        return not (
            is_memory_broker(self.config.broker_url)
            and self.config.embedded_worker
            and not self.embedded_running
        )

    def install_embedded_worker_hooks(self) -> None:
        """Start the embedded worker when the app serves its first request."""

        def start_on_first_request() -> None:
            if not self.embedded_running:
                self.start_embedded_worker()

        self.app.before_request(start_on_first_request)

    def start_embedded_worker(self) -> None:
        """Run Dramatiq worker threads and the relay inside this process (once).

        Stops by itself at interpreter exit. Calling it again does nothing, and so does
        calling it in the watcher process of ``flask run --reload`` (only the child that
        serves requests runs the worker).
        """
        if _in_reloader_watcher(self.app):
            logger.info("not starting the embedded worker in the reloader's watcher process")
            return
        with self._lock:
            if self._embedded_worker is not None and self._embedded_pid == os.getpid():
                return
            worker = dramatiq.Worker(
                self.broker,
                worker_threads=self.config.embedded_worker_threads,
                worker_timeout=EMBEDDED_WORKER_TIMEOUT_MS,
            )
            self._embedded_worker = worker
            self._embedded_pid = os.getpid()
        _show_step_logs()
        worker.start()
        self.start_relay()
        atexit.register(self.stop_embedded_worker)
        logger.info(
            "embedded worker started: %d threads on %s",
            self.config.embedded_worker_threads,
            self.config.broker_url,
        )

    def stop_embedded_worker(self) -> None:
        """Stop the embedded worker threads and the relay."""
        with self._lock:
            worker, self._embedded_worker = self._embedded_worker, None
        self.stop_relay()
        if worker is not None:
            worker.stop()
