"""gunicorn settings for the Procfile's web process (through ./gunicorn.conf.py, which
gunicorn reads by default) and for `python -m relay serve`.

gthread workers: a request spends its time waiting on the database commit, so a few
threads per process keep the cores busy. Slow clients are bounded by the worker class
(relay/gunicorn_worker.py): a request must arrive whole within REQUEST_READ_TIMEOUT
(15 s), an answer must make progress every 30 s, an idle keep-alive connection is
closed after 5 s. gunicorn's own `timeout` (30 s) restarts a process whose main loop
stops answering; it does not see threads stuck on a socket, hence the worker class.
The graceful timeout (20 s) fits inside Heroku's 30 s between SIGTERM and SIGKILL, so
requests in flight finish. The access log is off: the relay logs one JSON line per
event itself.

preload_app stays off (gunicorn's default): the app imported in the master before the
fork shares its pages with the workers (summed PSS 120 -> 92 MB under load), but each
process's RSS still counts them, and summed RSS, the measure of issue 5, rose from 163
to 191 MB (bench/README.md).

RELAY_EMBEDDED_WORKER=1 runs the dispatcher inside each web process (single-dyno
mode): one process to pay for, at the price of web and Kartra calls sharing its CPU.
"""

import glob
import os
import shutil
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "relay.gunicorn_worker.DeadlineWorker"  # gthread, with REQUEST_READ_TIMEOUT
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "warning"
logger_class = "relay.gunicorn_logger.QueryMaskingLogger"  # no query token in that log
# gunicorn's control socket (`gunicornc`, new in gunicorn 25) runs an asyncio loop in a
# thread of the master: 1.8 MB of the master's 26 MB peak (issue 5), for a tool the
# relay neither uses nor documents, on a default path ($HOME/.gunicorn/gunicorn.ctl)
# that every gunicorn of the same user on a machine shares.
control_socket_disable = True


def _embedded() -> bool:
    return os.environ.get("RELAY_EMBEDDED_WORKER", "").lower() in ("1", "true", "yes")


def on_starting(server):
    """Start with empty metrics files, and refuse two embedded dispatchers on one SQLite
    file (each would take the other's claims for a dead process's).

    Metrics from every gunicorn worker add up through files in one folder
    (prometheus_client multiprocess mode): PROMETHEUS_MULTIPROC_DIR, else a temporary
    folder of this server's, removed when it stops."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        server.relay_metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = server.relay_metrics_dir
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)
    url = os.environ.get("DATABASE_URL", "sqlite")
    if _embedded() and url.startswith("sqlite") and server.cfg.workers > 1:
        raise SystemExit(
            "RELAY_EMBEDDED_WORKER with SQLite needs WEB_CONCURRENCY=1 (one dispatcher per "
            "SQLite database); use PostgreSQL for more web processes"
        )


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


def on_exit(server):
    own = getattr(server, "relay_metrics_dir", None)
    if own:
        shutil.rmtree(own, ignore_errors=True)
