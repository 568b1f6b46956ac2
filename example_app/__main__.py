"""``python -m example_app``: the demo on the embedded default.

Creates fresh tables and example workflows, starts the embedded worker, and serves the
app (the status UI is at ``/geneva/``). ``--until-done`` runs no server: it waits until
every example workflow has stopped moving (finished, canceled or paused) and prints a
summary, which is how the test suite checks the demo.
"""

from __future__ import annotations

import argparse
import sys
import time

import sqlalchemy as sa

from example_app.app import create_app, seed
from example_app.models import db, geneva


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--until-done", action="store_true", help="run without a server")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    app = create_app()
    with app.app_context():
        db.drop_all()
        seed()
    state = app.extensions["geneva"]
    state.start_embedded_worker()
    if not args.until_done:
        print(f" * flask_geneva demo: open http://{args.host}:{args.port}/geneva/")
        app.run(host=args.host, port=args.port, use_reloader=False)
        return 0
    deadline = time.monotonic() + args.timeout
    with app.app_context():
        while True:
            counts = dict(
                db.session.execute(
                    sa.select(geneva.Workflow.state, sa.func.count()).group_by(
                        geneva.Workflow.state
                    )
                ).all()
            )
            db.session.rollback()
            moving = counts.get("ready", 0) + counts.get("performing", 0)
            if not moving:
                break
            if time.monotonic() > deadline:
                print(f"still moving after {args.timeout} s: {counts}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        for workflow in db.session.scalars(
            sa.select(geneva.Workflow).order_by(geneva.Workflow.id)
        ):
            print(f"{workflow.workflow_class} #{workflow.id}: {workflow.state}")
    state.stop_embedded_worker()
    return 0


if __name__ == "__main__":
    sys.exit(main())
