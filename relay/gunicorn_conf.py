"""gunicorn settings for the Procfile's web process and for `python -m relay serve`.

gthread workers: a request spends its time waiting on the database commit, so a few
threads per process keep the cores busy. Timeouts bound slow clients; the graceful
timeout fits inside Heroku's 30 s between SIGTERM and SIGKILL.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"


def _embedded() -> bool:
    return os.environ.get("RELAY_EMBEDDED_WORKER", "").lower() in ("1", "true", "yes")


def post_worker_init(worker):
    if _embedded():
        from relay.cli import start_embedded_dispatcher

        worker.relay_dispatcher = start_embedded_dispatcher(worker.wsgi)


def worker_exit(server, worker):
    embedded = getattr(worker, "relay_dispatcher", None)
    if embedded:
        thread, dispatcher = embedded
        dispatcher.shutdown()
        thread.join(timeout=10)
