"""``python -m example_app``: the demo on the embedded default.

Creates fresh tables and example workflows, starts the embedded worker, and serves the
app (the status UI is at ``/geneva/``). ``--until-done`` runs no server: it waits until
every example workflow has stopped moving (finished, canceled, paused, or waiting for a
signal that nobody has sent: the unanswered expense claim) and prints a summary, which
is how the test suite checks the demo.
"""

from __future__ import annotations

import argparse
import sys
import time

from example_app.app import create_app, seed, settled_states, waiting_for_signals
from example_app.models import db


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
        created = seed()
        unanswered = created[-2].id  # the expense claim nobody has decided on
    state = app.extensions["geneva"]
    state.start_embedded_worker()
    if not args.until_done:
        base = f"http://{args.host}:{args.port}"
        print(f" * flask_geneva demo: open {base}/geneva/")
        print(f" * expense claim workflow #{unanswered} waits for a manager; approve it with:")
        print(f"   curl -X POST -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' "
              f"""-d '{{"ok": true, "by": "you"}}' {base}/approvals/{unanswered}/decision""")
        print(f"   or: flask --app example_app.app geneva signal {unanswered} approved "
              f"""--payload '{{"ok": true, "by": "you"}}' --key demo-1""")
        app.run(host=args.host, port=args.port, use_reloader=False)
        return 0
    deadline = time.monotonic() + args.timeout
    with app.app_context():
        while (states := settled_states()) is None:
            if time.monotonic() > deadline:
                waiting = waiting_for_signals()
                print(f"still moving after {args.timeout} s (waiting for signals: {waiting})",
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
        for workflow, text in states.items():
            print(f"{workflow}: {text}")
    state.stop_embedded_worker()
    return 0


if __name__ == "__main__":
    sys.exit(main())
