"""The Flask extension: ``Geneva``, ``init_app`` and the per-app ``GenevaState``."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask

from flask_geneva.config import DEFAULTS, GenevaConfig
from flask_geneva.databases import SUPPORTED_BACKENDS, is_mysql, prepare_mysql_engine
from flask_geneva.errors import ConfigurationError, InvalidHeroError, SetupError
from flask_geneva.ids import parse_hero_key
from flask_geneva.logs import logger
from flask_geneva.models import build_models
from flask_geneva.publishing import listen_to_sessions_of

if TYPE_CHECKING:
    from flask_geneva.worker import GenevaState



class Geneva:
    """Durable workflows for a Flask-SQLAlchemy application.

    ``Geneva(db=db)`` defines the models on ``db.Model`` at once (so workflow classes can
    subclass ``geneva.Workflow`` at import time); ``init_app(app)`` reads the
    ``GENEVA_*`` configuration, builds the app's Dramatiq broker and step actor, registers
    the ``flask geneva`` commands and the status UI, and stores a
    :class:`~flask_geneva.worker.GenevaState` in ``app.extensions["geneva"]``.

    :param app: an app to initialise at once (``Geneva(app, db=db)``).
    :param db: the application's ``flask_sqlalchemy.SQLAlchemy`` instance.
    :param uuid_primary_keys: use UUID primary keys for workflows and executions.
    """

    #: The mapped base class of every workflow class (``geneva_workflows``).
    Workflow: Any
    #: The mapped step-execution model (``geneva_step_executions``).
    StepExecution: Any
    #: The mapped outbox model (``geneva_outbox``).
    OutboxMessage: Any
    #: The mapped signal model (``geneva_signals``).
    WorkflowSignal: Any

    def __init__(
        self, app: Flask | None = None, *, db: Any, uuid_primary_keys: bool = False
    ) -> None:
        if db is None or not hasattr(db, "Model"):
            raise TypeError("Geneva(db=...) needs the application's flask_sqlalchemy.SQLAlchemy")
        self.db = db
        self.uuid_primary_keys = uuid_primary_keys
        #: Workflow classes by stored identity (the newest definition of each).
        self.workflow_classes: dict[str, type] = {}
        self._hero_classes: dict[str, type] = {}
        self._lock = threading.Lock()
        self._states: list[GenevaState] = []
        models = build_models(self, db, uuid_primary_keys)
        self.Workflow, self.StepExecution, self.OutboxMessage, self.WorkflowSignal = models
        factory = getattr(getattr(db, "session", None), "session_factory", None)
        session_class = getattr(factory, "class_", None)
        if isinstance(session_class, type):
            # db.session's sessions publish their step messages after commit.
            listen_to_sessions_of(session_class)
        if app is not None:
            self.init_app(app)

    def send_signal(self, workflow_id: Any, name: str, payload: Any = None,
                    idempotency_key: str | None = None) -> Any:
        """Send the signal ``name`` to the workflow ``workflow_id`` in ``db.session``, as
        ``workflow.signal(...)`` does (for code that does not hold the workflow). Does
        not commit.

        :raises LookupError: no workflow has that id.
        """
        from flask_geneva.signalling import send_signal_by_id

        return send_signal_by_id(self, workflow_id, name, payload, idempotency_key)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``. Raises if it is already registered there."""
        from flask_geneva.worker import GenevaState

        if "geneva" in app.extensions:
            raise SetupError(
                "flask_geneva is already registered on this app; call init_app once per app"
            )
        if "sqlalchemy" not in app.extensions:
            raise SetupError("call db.init_app(app) before geneva.init_app(app)")
        if is_mysql(_check_database(app)):
            prepare_mysql_engine(app, self.db)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        config = GenevaConfig.from_mapping(app.config, testing=app.testing)
        state = GenevaState(self, app, config)
        app.extensions["geneva"] = state
        with self._lock:
            self._states.append(state)
        from flask_geneva.cli import geneva_cli

        app.cli.add_command(geneva_cli)
        if config.ui_url_prefix is not None:
            from flask_geneva.ui import register_ui

            register_ui(app, state)
        if config.embedded_worker:
            state.install_embedded_worker_hooks()

    # ------------------------------------------------------------------ registry

    def register_workflow_class(self, cls: type) -> None:
        """Remember a (new) workflow class; called when the class is defined."""
        identity = cls._geneva_identity  # type: ignore[attr-defined]
        with self._lock:
            self.workflow_classes[identity] = cls
            states = list(self._states)
        for state in states:
            state.declare_queue_for(cls)

    def workflow_class(self, identity: str) -> type | None:
        """The workflow class stored under ``identity``, or None when it no longer exists."""
        return self.workflow_classes.get(identity)

    # ------------------------------------------------------------------ heroes

    def hero_class(self, hero_type: str) -> type | None:
        """The mapped class named ``hero_type`` on this app's ``db.Model`` registry."""
        cls = self._hero_classes.get(hero_type)
        if cls is not None:
            return cls
        for mapper in self.db.Model.registry.mappers:
            if mapper.class_.__name__ == hero_type:
                self._hero_classes[hero_type] = mapper.class_
                return mapper.class_
        return None

    def identify_hero(self, hero: Any) -> tuple[str | None, str | None]:
        """``(hero_type, hero_id)`` for a mapped instance (flushing it if it has no key)."""
        if hero is None:
            return None, None
        try:
            instance_state = sa.inspect(hero)
        except sa.exc.NoInspectionAvailable:
            raise InvalidHeroError(
                f"the hero must be a mapped SQLAlchemy instance (a row of a db.Model class), "
                f"got {type(hero).__name__}: pass the record itself, as in create(hero=user)"
            ) from None
        mapper = instance_state.mapper
        if len(mapper.primary_key) != 1:
            raise InvalidHeroError(
                f"the hero {mapper.class_.__name__} has a primary key of "
                f"{len(mapper.primary_key)} columns; a hero needs a single-column primary key "
                f"(or set may_proceed_without_hero = True and keep the reference in data)"
            )
        identity = instance_state.identity
        if identity is None:
            session = self.db.session
            if instance_state.session is None:
                session.add(hero)
            session.flush()
            identity = sa.inspect(hero).identity
        if identity is None:  # pragma: no cover - a flushed row has its key
            raise InvalidHeroError(
                f"the hero {mapper.class_.__name__} has no primary key value after a flush; "
                f"give it one before creating the workflow"
            )
        self._hero_classes.setdefault(mapper.class_.__name__, mapper.class_)
        return mapper.class_.__name__, str(identity[0])

    def load_hero(self, hero_type: str | None, hero_id: str | None) -> Any:
        """Load the hero fresh from the database; ``None`` when it is gone or unknown."""
        if hero_type is None or hero_id is None:
            return None
        cls = self.hero_class(hero_type)
        if cls is None:
            logger.warning("hero type %r is not a mapped class of this app", hero_type)
            return None
        mapper: sa.orm.Mapper[Any] = sa.inspect(cls)
        column = mapper.primary_key[0]
        try:
            key: Any = _coerce_key(column.type, hero_id)
        except (TypeError, ValueError):
            return None
        return self.db.session.get(cls, key, populate_existing=True)


def require_state(app: Flask | None = None) -> GenevaState:
    """``app.extensions["geneva"]`` of ``app`` (default: the current app), or a
    :class:`~flask_geneva.errors.SetupError` that says which call is missing."""
    from flask import current_app

    target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    state = target.extensions.get("geneva")
    if state is None:
        raise SetupError(
            f"flask_geneva is not set up on the app {target.name!r}: call "
            f"geneva.init_app(app) in the app factory (after db.init_app(app))"
        )
    return state


def _check_database(app: Flask) -> str:
    """The backend name of the app's database; refuse one geneva does not run on,
    before anything is registered (read from the configuration: no engine is used, no
    app context pushed)."""
    options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
    url = options.get("url") or app.config.get("SQLALCHEMY_DATABASE_URI")
    if url is None:
        raise ConfigurationError(
            "flask_geneva keeps its tables in the app's default database: set "
            "SQLALCHEMY_DATABASE_URI (binds alone are not enough)"
        )
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ConfigurationError(
            f"flask_geneva runs on PostgreSQL, MariaDB, MySQL or SQLite; "
            f"SQLALCHEMY_DATABASE_URI ({parsed.render_as_string(hide_password=True)}) is "
            f"{backend}: point it at a PostgreSQL, MariaDB, MySQL or SQLite database"
        )
    return backend


def _coerce_key(column_type: sa.types.TypeEngine[Any], text: str) -> Any:
    """Turn a hero id stored as text back into the primary key's Python type (raises
    ``ValueError`` for text that is no such key)."""
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return text
    if isinstance(column_type, sa.Uuid):
        python_type = uuid.UUID
    return parse_hero_key(python_type, text)
