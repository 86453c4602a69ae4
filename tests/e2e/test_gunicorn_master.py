"""gunicorn's master as the Procfile starts it supervises its workers and does nothing
else: its memory counts once for itself and again in each worker it forks (issue 5)."""

from pathlib import Path


def test_the_master_runs_no_control_socket(relay_factory, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    relay = relay_factory(HOME=str(home), XDG_RUNTIME_DIR=str(home))
    web = relay.start_web()
    status = Path(f"/proc/{web.proc.pid}/status").read_text()
    assert "Threads:\t1\n" in status  # no control server thread
    assert list(home.rglob("gunicorn.ctl")) == []
