"""Poison (tasks/redrive.py): a result that fails every fold goes to the
dead-letter queue, is redriven MAX_REDRIVES times, and the next time it
comes back dead it is quarantined with why instead of going round for ever;
its operator lists it and sends it back (`crowdtrain redrive JOB --quarantined`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from chalicelib.tasks.redrive import MAX_REDRIVES
from crowdtrain import cli
from tests.harness import Dataset


def test_a_poison_result_is_quarantined_after_its_redrives_listed_and_sent_back(harness, crashes):
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4))
    task = harness.lease()
    assert harness.work(task).status_code == 200
    crashes.before("fold", "apply_batch", "the result poisons the fold")

    def fold_until_dead_lettered():
        for _ in range(6):  # the results queue's maxReceiveCount is 5
            for message in harness.result_messages(visibility=0):
                with pytest.raises(Exception):
                    harness.invoke_fold([message["Body"]])
        assert harness.waiting(harness.results_url) == 0 and harness.waiting(harness.result_dlq_url) == 1

    def redrive() -> dict:
        reply = harness.admin("POST", f"/jobs/{job}/redrive")
        assert reply.status_code == 200, reply.body
        return json.loads(reply.body)

    for _ in range(MAX_REDRIVES):
        fold_until_dead_lettered()
        assert redrive()["redriven"] == {"tasks": 0, "results": 1}
    fold_until_dead_lettered()
    done = redrive()
    assert done["redriven"] == {"tasks": 0, "results": 0} and done["quarantined"] == {"tasks": 0, "results": 1}
    assert harness.waiting(harness.results_url) == 0 and harness.waiting(harness.result_dlq_url) == 0
    [listed] = json.loads(harness.admin("GET", f"/jobs/{job}/quarantine").body)["quarantined"]
    assert listed["queue"] == "results" and listed["redrives"] == MAX_REDRIVES
    assert f"after {MAX_REDRIVES} redrives" in listed["reason"]
    assert (listed["message"]["job_id"], listed["message"]["batch"]) == (job, task["batch"])
    # the operator fixed the fold: the quarantined result goes back and is folded once
    crashes.heal()
    reply = harness.admin("POST", f"/jobs/{job}/quarantine")
    assert reply.status_code == 200 and len(json.loads(reply.body)["retried"]) == 1
    assert json.loads(harness.admin("GET", f"/jobs/{job}/quarantine").body)["quarantined"] == []
    assert harness.deliver() == 1
    assert harness.status(job)["version"] == 1 and harness.folds(job) == [(0, task["batch"], 1)]


def test_the_quarantine_is_for_the_operator_only(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4))
    assert harness.call("GET", f"/jobs/{job}/quarantine").status_code == 401
    assert harness.call("POST", f"/jobs/{job}/quarantine").status_code == 401


def test_the_cli_lists_what_it_sends_back(monkeypatch, capsys):
    calls = []
    retried = {
        "queue": "results",
        "message_id": "m-1",
        "redrives": 3,
        "reason": "dead-lettered again after 3 redrives",
        "message": {"job_id": "j-1", "batch": 7},
    }
    replies = {
        "/jobs/j-1/redrive": {"redriven": {"tasks": 0, "results": 0}, "quarantined": {"tasks": 0, "results": 1}},
        "/jobs/j-1/quarantine": {"retried": [retried]},
    }
    api = SimpleNamespace(call=lambda method, path: calls.append((method, path)) or replies[path])
    monkeypatch.setattr(cli, "_api", lambda args: api)
    cli.redrive(SimpleNamespace(job="j-1", quarantined=False, json=False))
    assert capsys.readouterr().out.splitlines() == [
        "sent back to their queues: nothing",
        "quarantined (redriven too often): 1 results; `crowdtrain redrive --quarantined j-1` lists them",
    ]
    cli.redrive(SimpleNamespace(job="j-1", quarantined=True, json=False))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "results m-1: dead-lettered again after 3 redrives" and '"batch": 7' in out[1]
    assert out[-1] == "sent back 1 quarantined message of j-1"
    assert calls == [("POST", "/jobs/j-1/redrive"), ("POST", "/jobs/j-1/quarantine")]
