"""Canaries: the SQLAlchemy behaviour the workflow models rest on.

flask_geneva stays on SQLAlchemy's public API except in one place,
``flask_geneva.registration.forget_replaced_class``, which lets a workflow class defined
again (a reloaded module, a test) replace the old one: SQLAlchemy has no public way to
drop one mapped class. The two internals it touches are each named by a test here, so a
SQLAlchemy upgrade that changes them fails this file with a message saying what to fix,
instead of failing somewhere far away. The public behaviour rows of removed classes rely
on (a ``polymorphic_on`` expression read through its type) is checked here too.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from flask_geneva import Geneva, step
from flask_geneva.registration import FALLBACK_IDENTITY, stored_class_discriminator

_WHY = (
    "flask_geneva.registration.forget_replaced_class relies on it so that a workflow "
    "class defined again replaces the old one; find SQLAlchemy's new way and update it"
)


def _define(base: type, name: str, module: str, **attributes: Any) -> type:
    """A class ``name`` of ``module`` on ``base``, as a class statement there makes it."""
    return type(name, (base,), {"__module__": module, **attributes})


def test_canary_clsregistry_remove_class_forgets_a_class_name():
    """Internal 1: ``sqlalchemy.orm.clsregistry._remove_class`` and
    ``registry._class_registry``."""
    from sqlalchemy.orm import clsregistry

    class Base(DeclarativeBase):
        pass

    def columns() -> dict[str, Any]:
        return {"__tablename__": "things", "id": mapped_column(sa.Integer, primary_key=True)}

    old = _define(Base, "Thing", "canary.things", **columns())
    assert hasattr(clsregistry, "_remove_class"), (
        f"sqlalchemy.orm.clsregistry._remove_class is gone; {_WHY}"
    )
    try:
        clsregistry._remove_class("Thing", old, Base.registry._class_registry)
    except (AttributeError, TypeError) as error:
        pytest.fail(f"clsregistry._remove_class changed ({error!r}); {_WHY}")
    Base.metadata.remove(old.__table__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _define(Base, "Thing", "canary.things", **columns())

    class Holder(Base):
        __tablename__ = "holders"
        id: Mapped[int] = mapped_column(primary_key=True)
        thing_id: Mapped[int] = mapped_column()
        thing = relationship("Thing", primaryjoin="foreign(Holder.thing_id) == Thing.id")

    Base.registry.configure()
    assert sa.inspect(Holder).relationships["thing"].mapper.class_ is new, (
        f"clsregistry._remove_class no longer takes a class out of the string lookup; {_WHY}"
    )


def test_canary_polymorphic_map_entry_removed_lets_a_new_class_take_the_identity():
    """Internal 2: removing an entry from ``Mapper.polymorphic_map`` (read-only by the
    documentation) before a class takes the identity again."""

    class Base(DeclarativeBase):
        pass

    class Shape(Base):
        __tablename__ = "shapes"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(sa.String(20))
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "shape"}

    _define(Shape, "Circle", "canary.v1", __mapper_args__={"polymorphic_identity": "circle"})
    polymorphic_map = sa.inspect(Shape).polymorphic_map
    assert isinstance(polymorphic_map, dict), (
        f"Mapper.polymorphic_map is no longer a dict; {_WHY}"
    )
    polymorphic_map.pop("circle")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            circle = _define(
                Shape, "Circle", "canary.v2", __mapper_args__={"polymorphic_identity": "circle"}
            )
        except sa.exc.SAWarning as warning:
            pytest.fail(f"Mapper.polymorphic_map is no longer what mappers consult: {warning}")
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.execute(sa.insert(Shape.__table__).values(id=1, kind="circle"))
        assert type(session.get(Shape, 1)) is circle, (
            f"a row no longer loads as the class that took its identity; {_WHY}"
        )


def test_a_polymorphic_on_expression_reads_unknown_identities_as_the_base():
    """Public API (no internal), checked because rows of removed workflow classes rely on
    it: ``polymorphic_on`` given a ``type_coerce`` of the discriminator column reads it
    through that type, and a subclass that maps ``polymorphic_on`` to the plain column
    and leaves out the base's discriminator property selects and filters by the column."""
    known: dict[str, type] = {}

    class Base(DeclarativeBase):
        pass

    class Animal(Base):
        __tablename__ = "animals"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(sa.String(20))
        __mapper_args__ = {
            "polymorphic_on": stored_class_discriminator(kind.column, known),
            "polymorphic_identity": FALLBACK_IDENTITY,
        }

    base_mapper = sa.inspect(Animal)
    discriminator = base_mapper.get_property_by_column(base_mapper.polymorphic_on).key
    known["Cat"] = cat = _define(
        Animal,
        "Cat",
        "canary.animals",
        __mapper_args__={
            "polymorphic_identity": "Cat",
            "polymorphic_on": "kind",
            "exclude_properties": {discriminator},
        },
    )
    assert [attribute.key for attribute in sa.inspect(cat).column_attrs] == ["id", "kind"]
    query = str(sa.select(cat))
    assert "WHERE animals.kind IN" in query and "_sa_polymorphic_on" not in query, query
    assert cat().kind == "Cat"
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(cat(id=1))
        session.execute(sa.insert(Animal.__table__).values(id=2, kind="Dodo"))
        session.commit()
        session.expunge_all()
        loaded = session.scalars(sa.select(Animal).order_by(Animal.id)).all()
        assert [type(animal) for animal in loaded] == [cat, Animal]
        assert loaded[1].kind == "Dodo"
        assert session.scalars(sa.select(cat)).all() == [loaded[0]]


def test_a_redefined_workflow_class_replaces_the_old_one_in_string_lookups():
    """Through geneva: a class defined again in the same module (a reload) is the one a
    ``relationship("...")`` by class name finds, and no warning is raised."""
    own_db = SQLAlchemy()
    own_geneva = Geneva(db=own_db)

    def define() -> type:
        namespace = {"__name__": "billing.flows", "geneva": own_geneva, "step": step}
        source = (
            "class RenewalWorkflow(geneva.Workflow):\n"
            "    @step\n"
            "    def renew(self):\n"
            "        pass\n"
        )
        exec(compile(source, "<billing.flows>", "exec"), namespace)
        return namespace["RenewalWorkflow"]

    define()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = define()

    class Invoice(own_db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "invoices"
        id: Mapped[int] = mapped_column(primary_key=True)
        workflow_id: Mapped[int] = mapped_column()
        renewal = relationship(
            "RenewalWorkflow",
            primaryjoin="foreign(Invoice.workflow_id) == RenewalWorkflow.id",
            viewonly=True,
        )

    own_db.Model.registry.configure()
    assert sa.inspect(Invoice).relationships["renewal"].mapper.class_ is again
    assert own_geneva.workflow_classes["RenewalWorkflow"] is again
