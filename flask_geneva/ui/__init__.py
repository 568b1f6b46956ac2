"""The read-only status UI (a blueprint under ``GENEVA_UI_URL_PREFIX``)."""

from __future__ import annotations

from typing import Any

from flask import Flask


def register_ui(app: Flask, state: Any) -> None:
    """Register the status blueprint on ``app`` (placeholder until the UI lands)."""
