"""Errors: every error flask_geneva raises on purpose derives from ``GenevaError``, keeps
the built-in base a caller expects (and SPEC names), and says what to do."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import flask_geneva
from flask_geneva import (
    ConfigurationError,
    Geneva,
    GenevaError,
    InvalidHeroError,
    InvalidStateError,
    SetupError,
    StepConfigurationError,
    WorkflowAlreadyOngoing,
    errors,
    step,
)
from flask_geneva.brokers import make_broker
from flask_geneva.errors import QueryError
from flask_geneva.ids import parse_workflow_id
from flask_geneva.testing import perform_step
from tests.models import db, geneva


class Errand(geneva.Workflow):
    @step
    def go(self) -> None:
        pass


def _public_error_classes() -> list[type[BaseException]]:
    exported = [getattr(flask_geneva, name) for name in flask_geneva.__all__]
    defined = [value for _, value in inspect.getmembers(errors, inspect.isclass)]
    return [
        value
        for value in {*exported, *defined}
        if isinstance(value, type) and issubclass(value, BaseException)
    ]


def test_every_public_error_class_derives_from_geneva_error() -> None:
    classes = _public_error_classes()
    assert len(classes) >= 10
    assert [c.__name__ for c in classes if not issubclass(c, GenevaError)] == []
    exported = set(flask_geneva.__all__)
    assert [c.__name__ for c in classes if c.__name__ not in exported] == []
    assert QueryError is flask_geneva.InvalidInputError  # the older name, kept


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfigurationError, ValueError),  # docs/configuration.md: init_app raises ValueError
        (InvalidHeroError, ValueError),  # SPEC §3: create(hero=None) raises ValueError
        (QueryError, ValueError),
        (SetupError, RuntimeError),
        (flask_geneva.NotAWorkflowClassError, TypeError),  # create() on geneva.Workflow
        (flask_geneva.InvalidWorkflowDataError, ValueError),  # SPEC §3: data must be JSON
        (flask_geneva.UnknownStepError, ValueError),  # SPEC §9: perform_step's ValueError
        (flask_geneva.StepLimitReachedError, RuntimeError),  # docs/testing.md
    ],
)
def test_errors_keep_the_built_in_base_a_caller_expects(error: type, builtin: type) -> None:
    assert issubclass(error, GenevaError)
    assert issubclass(error, builtin)


def test_the_spec_named_errors_are_raised_as_spec_names_them(app: Flask, user: Any) -> None:
    with pytest.raises(ValueError, match="needs a hero"):
        Errand.create(hero=None)
    workflow = Errand.create(hero=user)
    db.session.commit()
    with pytest.raises(WorkflowAlreadyOngoing):
        Errand.create(hero=user)
    db.session.rollback()
    with pytest.raises(InvalidStateError):
        workflow.resume()
    with pytest.raises(ValueError, match="go"):  # SPEC §9: lists the steps
        perform_step(workflow, "no_such_step")
    with pytest.raises(StepConfigurationError):

        class Broken(geneva.Workflow):
            @step(wait=-1)
            def negative(self) -> None:
                pass


def test_a_second_geneva_for_one_sqlalchemy_is_a_setup_error() -> None:
    with pytest.raises(SetupError, match="one Geneva per SQLAlchemy instance and share it"):
        Geneva(db=db)


def test_an_unknown_broker_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"GENEVA_BROKER_URL must start with redis://"):
        make_broker("kafka://localhost", idle_timeout_ms=100)


@pytest.mark.parametrize(
    "key", ["GENEVA_HOUSEKEEPING_BATCH_SIZE", "GENEVA_EMBEDDED_WORKER_THREADS"]
)
def test_a_configuration_value_that_is_not_a_number_names_its_key(key: str) -> None:
    app = Flask("errors_config")
    app.config.update({"SQLALCHEMY_DATABASE_URI": "sqlite://", key: "lots"})
    own_db = SQLAlchemy()
    own_db.init_app(app)
    with pytest.raises(ConfigurationError, match=rf"{key} must be a whole number, got 'lots'"):
        Geneva(db=own_db).init_app(app)
    assert "geneva" not in app.extensions


def test_a_hero_that_is_not_a_mapped_instance_is_refused(app: Flask) -> None:
    with pytest.raises(InvalidHeroError, match=r"got str: pass the record itself"):
        Errand.create(hero="user 7")
    assert not db.session.new


class _ScratchBase(DeclarativeBase):
    pass


class _Pair(_ScratchBase):
    __tablename__ = "pairs"
    left: Mapped[int] = mapped_column(primary_key=True)
    right: Mapped[int] = mapped_column(primary_key=True)


def test_a_hero_with_a_composite_key_is_refused_before_anything_is_written(app: Flask) -> None:
    pair = _Pair(left=1, right=2)
    with pytest.raises(InvalidHeroError, match=r"_Pair has a primary key of 2 columns"):
        Errand.create(hero=pair)
    assert sa.inspect(pair).transient
    assert not db.session.new


def test_a_malformed_workflow_id_is_a_query_error(app: Flask) -> None:
    with pytest.raises(QueryError, match="whole numbers"):
        parse_workflow_id(geneva, "seven")
    with pytest.raises(GenevaError):
        parse_workflow_id(geneva, "seven")


def test_the_fallback_identity_is_reserved() -> None:
    with pytest.raises(StepConfigurationError, match="reserved for rows whose class is gone"):

        class Impostor(geneva.Workflow):
            workflow_name = "geneva.Workflow"


def test_the_engine_raises_its_own_classes(app: Flask, user: Any) -> None:
    with pytest.raises(flask_geneva.NotAWorkflowClassError, match=r"not on geneva\.Workflow"):
        geneva.Workflow.create(hero=user)
    with pytest.raises(flask_geneva.InvalidWorkflowDataError, match="takes a dict"):
        Errand.create(hero=user, data=["not", "a", "dict"])
    wf = Errand.create(hero=user)
    db.session.commit()
    with pytest.raises(flask_geneva.UnknownStepError, match="its steps are: go"):
        perform_step(wf, "nope")
