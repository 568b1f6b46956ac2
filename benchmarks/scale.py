"""Scale: creating many workflows, housekeeping's deletion rate, the relay's throughput.

Run by hand (never in CI), against PostgreSQL, in a database of its own
(``geneva_scale``, dropped and created again)::

    .venv/bin/python benchmarks/scale.py [--workflows 1000000] [--due 100000]

1. **Creation**: ``--workflows`` workflows made with ``SomeWorkflow.create()``, committed
   in batches of 1,000 (each one is a workflow row, a scheduled execution and an outbox
   row, and its fast-path publish to the in-process broker) — workflows per second.
2. **Housekeeping deletion**: all of them are made finished long ago, then
   ``run_housekeeping()`` deletes them in batches of ``GENEVA_HOUSEKEEPING_BATCH_SIZE`` —
   workflows (with executions and outbox rows) deleted per second.
3. **Relay**: ``--due`` later steps become due at once; one relay pass publishes them to
   Redis — messages per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva, step
from flask_geneva.housekeeping import run_housekeeping
from flask_geneva.timeutil import utcnow

SERVER = os.environ.get("SCALE_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE = "geneva_scale"
REDIS_URL = os.environ.get("SCALE_REDIS_URL", "redis://127.0.0.1:6379/14")

db = SQLAlchemy()
geneva = Geneva(db=db)


class ScaleWorkflow(geneva.Workflow):
    may_proceed_without_hero = True
    allow_multiple = True

    @step
    def first(self) -> None:
        pass

    @step(wait=timedelta(days=1))
    def later(self) -> None:
        pass


def create_app(broker_url: str) -> Flask:
    app = Flask("geneva_scale")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"{SERVER}/{DATABASE}",
        GENEVA_BROKER_URL=broker_url,
        GENEVA_DEFAULT_QUEUE="geneva_scale",
    )
    db.init_app(app)
    geneva.init_app(app)
    return app


def fresh_database() -> None:
    admin = sa.create_engine(f"{SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{DATABASE}"'))
    admin.dispose()


def measure_creation(count: int) -> float:
    app = create_app("memory://")
    with app.app_context():
        db.create_all()
        started = time.perf_counter()
        made = 0
        while made < count:
            batch = min(1000, count - made)
            for _ in range(batch):
                ScaleWorkflow.create()
            db.session.commit()
            made += batch
            # The in-process broker keeps what it was sent: empty it, no worker runs here.
            app.extensions["geneva"].broker.flush_all()
            if made % 100_000 == 0:
                print(f"  created {made:,}", flush=True)
        elapsed = time.perf_counter() - started
    return count / elapsed


def measure_deletion(count: int) -> float:
    app = create_app("memory://")
    with app.app_context():
        long_ago = utcnow() - timedelta(days=365)
        db.session.execute(
            sa.update(geneva.Workflow.__table__).values(
                state="finished", transitioned_at=long_ago, next_step_name=None
            )
        )
        db.session.execute(
            sa.update(geneva.StepExecution.__table__).values(
                state="completed", outcome="success", finished_at=long_ago
            )
        )
        db.session.commit()
        db.session.execute(sa.text("ANALYZE"))
        db.session.commit()
        started = time.perf_counter()
        result = run_housekeeping()
        elapsed = time.perf_counter() - started
        assert result.deleted_workflows == count, result
    return count / elapsed


def measure_relay(due: int) -> float:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    app = create_app(REDIS_URL)
    with app.app_context():
        db.create_all()
        for _ in range(due // 1000):
            for _ in range(1000):
                ScaleWorkflow.create()
            db.session.commit()
        # Every first step becomes a later step due now, as if its wait had just ended.
        outbox = geneva.OutboxMessage.__table__
        now = utcnow()
        db.session.execute(
            sa.update(outbox).values(
                created_at=now - timedelta(days=1), available_at=now, published_at=None
            )
        )
        db.session.commit()
        db.session.execute(sa.text("ANALYZE"))
        db.session.commit()
        relay = app.extensions["geneva"].relay
        started = time.perf_counter()
        published = relay.publish_due()
        elapsed = time.perf_counter() - started
        assert published == due, published
    redis.Redis.from_url(REDIS_URL).flushdb()
    return due / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workflows", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=100_000)
    args = parser.parse_args()
    fresh_database()
    print(f"creating {args.workflows:,} workflows ...", flush=True)
    created = measure_creation(args.workflows)
    print(f"creation: {created:,.0f} workflows/s", flush=True)
    deleted = measure_deletion(args.workflows)
    print(f"housekeeping deletion: {deleted:,.0f} workflows/s", flush=True)
    fresh_database()
    relayed = measure_relay(args.due)
    print(f"relay: {relayed:,.0f} messages/s ({args.due:,} due rows, one pass)", flush=True)
    print("| measure | rate |")
    print("|---|---|")
    print(f"| create() + commit, batches of 1,000 | {created:,.0f} workflows/s |")
    print(f"| housekeeping deletion (with executions, outbox) | {deleted:,.0f} workflows/s |")
    print(f"| relay, {args.due:,} due rows to Redis | {relayed:,.0f} messages/s |")


if __name__ == "__main__":
    main()
