"""The flask_geneva example app: the manual's three appendix workflows, runnable.

``python -m example_app`` (or ``scripts/demo``) runs it on the embedded default:
SQLite, the in-process ``memory://`` broker and an embedded worker.
"""
