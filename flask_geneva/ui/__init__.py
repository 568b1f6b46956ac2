"""The read-only status UI: a blueprint under ``GENEVA_UI_URL_PREFIX``.

Four pages, each with a JSON twin (the same path with ``?format=json``): the overview,
the workflow list, one workflow, and one hero's workflows. The UI changes nothing; for
each operator action a workflow's state allows it shows the ``flask geneva ...``
command. Templates live under ``templates/geneva/`` (an app overrides one by putting a
file of the same name in its own ``templates/geneva/``); the CSS and JS ship in
``static/geneva/``, so the pages load nothing from elsewhere.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Any

from flask import Flask


def register_ui(app: Flask, state: Any) -> None:
    """Register the status blueprint on ``app`` under ``state.config.ui_url_prefix``."""
    from flask_geneva.ui.views import bp

    app.register_blueprint(bp, url_prefix=state.config.ui_url_prefix.rstrip("/") or None)
