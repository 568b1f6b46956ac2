"""flask_geneva with heroes on MariaDB: the ``geneva`` runner with its tables on MariaDB.

The same workers, workflows and measurements as ``geneva_bench.py``; only
``SQLALCHEMY_DATABASE_URI`` points at MariaDB (``BENCH_MARIADB_URL``, default the local
server as root; the database is ``BENCH_DB``). Run it beside the PostgreSQL line, e.g.::

    .venv/bin/python benchmarks/run.py --loads heavy --systems floor,geneva,geneva-mariadb

Its "pg xacts" column counts MariaDB's ``COMMIT`` statements (server-wide) instead of
PostgreSQL's transaction ids.
"""

from __future__ import annotations

import os
import sys

SYSTEM = "geneva-mariadb"
LABEL = "flask_geneva with heroes, on MariaDB (PyMySQL)"
ORDER = 3
VENV = ".venv"

# Before common and geneva_bench are imported: they read it (and the workers inherit it).
os.environ["BENCH_DATABASE"] = "mariadb"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import geneva_bench  # noqa: E402

if __name__ == "__main__":
    common.runner_main(SYSTEM, geneva_bench.run)
