"""``flask geneva ...``: operate workflows from the command line."""

from __future__ import annotations

from flask.cli import AppGroup

geneva_cli = AppGroup("geneva", help="Operate flask_geneva workflows.")
