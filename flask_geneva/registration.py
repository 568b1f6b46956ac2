"""How a subclass of ``geneva.Workflow`` becomes a workflow class.

When the class statement runs, :func:`prepare_workflow_class` checks the class, builds its
step definition from the DSL records of its body, gives it its stored identity (the
``workflow_class`` column: ``workflow_name`` or ``__name__``) as its polymorphic identity
in the single-table hierarchy, and registers it on its :class:`~flask_geneva.Geneva`.

Two things SQLAlchemy does not do on its own are handled here:

- **Rows of a class that no longer exists** (a deploy removed it) load as the base
  ``Workflow``. The base maps ``polymorphic_on`` to :func:`stored_class_discriminator`, the
  ``workflow_class`` column read through a type that turns every name this application
  does not define into :data:`FALLBACK_IDENTITY`, the base's own identity. Public API only
  (``polymorphic_on`` takes any SQL expression; ``type_coerce`` renders the bare column,
  so a query of the base selects ``workflow_class`` once more and nothing else), and each
  workflow class maps ``polymorphic_on`` to the plain column, so ``select(SomeWorkflow)``
  filters on the indexed column and a new instance gets its identity set by SQLAlchemy.
- **A class defined again** under the same identity (a reloaded module, a test) replaces
  the old one. SQLAlchemy has no public way to drop one mapped class: see
  :func:`forget_replaced_class`, the one place that touches its internals, each named by
  a canary test (``tests/test_sqlalchemy_canaries.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Mapper

from flask_geneva import dsl
from flask_geneva.errors import StepConfigurationError

logger = logging.getLogger("flask_geneva")

#: The length of the name columns (``workflow_class``, ``step_name``, ...).
NAME_LENGTH: Final = 255

#: The polymorphic identity of the base ``Workflow``: a row whose ``workflow_class`` names
#: no class defined in this application loads with it, as the base class. Never stored
#: (the row keeps the name it has); reserved, so no ``workflow_name`` may take it.
FALLBACK_IDENTITY: Final = "geneva.Workflow"


def stored_class_discriminator(column: Any, known: Mapping[str, type]) -> Any:
    """``column`` (``workflow_class``) as the base's ``polymorphic_on``: it reads a name
    that is not a key of ``known`` (the classes defined now) as :data:`FALLBACK_IDENTITY`.

    ``type_coerce`` renders the bare column; the type works on the result row only.
    """

    class DefinedWorkflowClass(sa.types.TypeDecorator[str]):
        """A workflow class name, read as the base's identity when no class has it."""

        impl = sa.String(NAME_LENGTH)
        #: The class is made for one ``known`` mapping, so the class itself keys the cache.
        cache_ok = True

        def process_result_value(self, value: str | None, dialect: Any) -> str | None:
            if value is None or value in known:
                return value
            return FALLBACK_IDENTITY

    return sa.type_coerce(column, DefinedWorkflowClass())


def prepare_workflow_class(cls: type) -> None:
    """Check a new workflow class, build its definition and give it its identity.

    Runs in ``__init_subclass__``, before SQLAlchemy maps the class, so the mapper
    arguments set here are the ones it is mapped with.
    """
    parent = next(
        (base for base in cls.__mro__[1:] if hasattr(base, "_geneva_definition")), None
    )
    if parent is None:  # pragma: no cover - only the base itself has no parent
        return
    geneva = cls._geneva  # type: ignore[attr-defined]
    identity = _checked_identity(cls)
    previous = geneva.workflow_classes.get(identity)
    if previous is not None and not _redefines(previous, cls):
        raise StepConfigurationError(
            f"{cls.__module__}.{cls.__qualname__}: the workflow name {identity!r} is already "
            f"taken by {previous.__module__}.{previous.__qualname__}, and rows of one would "
            f"load as the other; set workflow_name = '...' on one of them"
        )
    cls._geneva_definition = dsl.build_definition(cls, parent._geneva_definition)  # type: ignore[attr-defined]
    cls._geneva_identity = identity  # type: ignore[attr-defined]
    base_mapper: Mapper[Any] = sa.inspect(geneva.Workflow)
    cls.__mapper_args__ = _mapper_args(cls, identity, base_mapper)  # type: ignore[attr-defined]
    if previous is not None:
        forget_replaced_class(base_mapper, previous, cls)
    geneva.register_workflow_class(cls)


def _mapper_args(cls: type, identity: str, base_mapper: Mapper[Any]) -> dict[str, Any]:
    """The mapper arguments of a workflow class: its identity, and ``polymorphic_on`` the
    plain ``workflow_class`` column, so its rows are selected by ``workflow_class IN
    (...)`` (an index serves it) and a new instance gets its identity from SQLAlchemy.

    The column property SQLAlchemy adds to the base for its discriminator expression is
    left out: a workflow class has no use for it, and its columns stay its table's.
    """
    mapper_args = dict(cls.__dict__.get("__mapper_args__", {}))
    mapper_args["polymorphic_identity"] = identity
    mapper_args["polymorphic_on"] = "workflow_class"
    if base_mapper.polymorphic_on is not None:
        discriminator = base_mapper.get_property_by_column(base_mapper.polymorphic_on)
        excluded = set(mapper_args.get("exclude_properties") or ())
        mapper_args["exclude_properties"] = excluded | {discriminator.key}
    return mapper_args


def _checked_identity(cls: type) -> str:
    """The stored identity of ``cls``; raises for a class that cannot be a workflow."""
    identity = cls.__dict__.get("workflow_name") or cls.__name__
    if not isinstance(identity, str) or len(identity) > NAME_LENGTH:
        raise StepConfigurationError(
            f"{cls.__qualname__}: workflow_name must be a string of at most "
            f"{NAME_LENGTH} characters, got {identity!r}"
        )
    if identity == FALLBACK_IDENTITY:
        raise StepConfigurationError(
            f"{cls.__qualname__}: the workflow name {identity!r} is reserved for rows whose "
            f"class is gone; choose another workflow_name"
        )
    for attribute in ("__tablename__", "__table__"):
        if attribute in cls.__dict__:
            raise StepConfigurationError(
                f"{cls.__qualname__}: workflow classes share the geneva_workflows table; "
                f"remove {attribute}"
            )
    for flag in ("may_proceed_without_hero", "allow_multiple"):
        if not isinstance(getattr(cls, flag), bool):
            raise StepConfigurationError(f"{cls.__qualname__}: {flag} must be True or False")
    return identity


def _redefines(previous: type, cls: type) -> bool:
    """Whether ``cls`` may take ``previous``'s name: it is the same class defined again (a
    reloaded module), or one of them is defined inside a function (as tests and factories
    do, knowingly). Two module-level classes in different places may not."""
    same_place = (previous.__module__, previous.__qualname__) == (cls.__module__, cls.__qualname__)
    local = "<locals>" in previous.__qualname__ or "<locals>" in cls.__qualname__
    return same_place or local


def forget_replaced_class(base_mapper: Mapper[Any], previous: type, replacement: type) -> None:
    """Let ``replacement``, defined under ``previous``'s identity, replace it quietly.

    SQLAlchemy keeps every mapped class until its whole registry is disposed
    (``registry.dispose()`` would drop the application's own models too), and warns
    when a second class takes an identity or a class name. Two internals, the only
    private hooks in flask_geneva, each checked by a canary test
    (``tests/test_sqlalchemy_canaries.py``):

    - ``Mapper.polymorphic_map`` (a documented attribute, read-only by its docs): the old
      class's entry is removed, so the new mapper takes the identity without a warning.
    - ``sqlalchemy.orm.clsregistry._remove_class``: the old class leaves the registry's
      string lookup, so ``relationship("SomeWorkflow")`` finds the new class, not two.
    """
    base_mapper.polymorphic_map.pop(replacement._geneva_identity, None)  # type: ignore[attr-defined]
    if previous.__name__ != replacement.__name__:
        return  # the string lookup holds them under different names
    try:
        from sqlalchemy.orm import clsregistry

        clsregistry._remove_class(
            previous.__name__, previous, base_mapper.registry._class_registry
        )
    except Exception:  # pragma: no cover - a canary test names this internal
        logger.debug("could not forget the replaced workflow class %r", previous)
