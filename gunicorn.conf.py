"""gunicorn reads this file by default, so the Procfile's `gunicorn app:app` gets the
relay's settings; they live in the package (relay/gunicorn_conf.py) so that
`python -m relay serve` finds them from any directory."""

from relay.gunicorn_conf import *  # noqa: F403
