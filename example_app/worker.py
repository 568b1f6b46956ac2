"""The Dramatiq entry point: ``dramatiq example_app.worker:broker``.

Start as many of these as you like, on any machine that reaches the database and the
broker (set ``DATABASE_URL`` and ``GENEVA_BROKER_URL``). Each worker process also runs
the outbox relay.
"""

from __future__ import annotations

from example_app.app import create_app

app = create_app()
broker = app.extensions["geneva"].broker
