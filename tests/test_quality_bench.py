"""bench/quality.py's own guard: a run's volunteers lease from whatever job is
running, so a run must not start beside another running job."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import quality


class Api:
    def __init__(self, jobs):
        self.jobs = jobs

    def call(self, method, path):
        assert (method, path) == ("GET", "/jobs")
        return {"jobs": self.jobs}


def test_a_run_refuses_to_start_its_volunteers_beside_another_running_job(tmp_path: Path, monkeypatch):
    started = []
    monkeypatch.setattr(quality.subprocess, "Popen", lambda *a, **k: started.append(a))
    stack = SimpleNamespace(
        workdir=tmp_path,
        state={"api": "http://127.0.0.1:1"},
        api=Api(
            [
                {"job_id": "j-run", "status": "running"},
                {"job_id": "j-serves-batches", "status": "running"},
                {"job_id": "j-old", "status": "finished"},
            ]
        ),
    )
    with pytest.raises(RuntimeError, match=r"j-serves-batches.*beside j-run"):
        quality.run_job(stack, "j-run", 4)
    assert started == []  # no volunteer was started


def test_a_job_that_only_serves_a_sequential_run_is_paused(monkeypatch):
    calls = []
    stack = SimpleNamespace(
        api=SimpleNamespace(
            create_job=lambda spec, weights, batches: "j-1", call=lambda method, path: calls.append((method, path))
        )
    )
    model = SimpleNamespace(job_spec=lambda batches, **kw: {}, batch_file=lambda x, y: b"")
    assert quality.job_of(stack, model, [0], [0], b"", 1, 1, 1, 1, paused=True) == "j-1"
    assert calls == [("POST", "/jobs/j-1/pause")]
    calls.clear()
    quality.job_of(stack, model, [0], [0], b"", 1, 1, 1, 1)
    assert calls == []
