"""WSGI entry point: `gunicorn app:app`."""

from relay.cli import build_or_exit

app = build_or_exit()
