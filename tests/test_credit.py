"""Credit (fold/credit.py): each identity earns samples x parameters / 1e6
for every result of its folded into a version, and nothing else; the
public status document ranks the top identities, a volunteer reads its own
with its token, the operator exports every identity's (`crowdtrain credit`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from chalicelib import services as services_module
from crowdtrain import cli
from tests.harness import ADMIN, PUBLIC, Dataset

PARAMETERS = 4 * 3 + 3  # the harness's softmax: kernel and bias
PER_RESULT = 4 * PARAMETERS / 1e6  # 4 samples a batch


def public_status(harness, job: str) -> dict:
    return json.loads(harness.fetch(f"{PUBLIC}jobs/{job}/status.json"))


def ledger(harness, job: str) -> dict[str, dict]:
    reply = harness.admin("GET", f"/jobs/{job}/credit")
    assert reply.status_code == 200, reply.body
    return {v["volunteer_id"]: v for v in json.loads(reply.body)["volunteers"]}


def test_credit_is_earned_for_folded_results_only(harness):
    """Staleness 0: b's result computed on version 0 arrives after a's made
    version 1, is discarded, and earns nothing; its later folded one does."""
    job = harness.create_job(Dataset.generate(batches=4, batch_size=4), staleness=0)
    a_task, b_task = harness.lease("a"), harness.lease("b")
    assert harness.work(a_task).status_code == 200
    harness.deliver()
    assert harness.work(b_task).status_code == 200
    harness.deliver()
    assert harness.status(job)["discarded"] == {"stale": 1}
    while (task := harness.lease("b")) is not None:
        assert harness.work(task).status_code == 200
        harness.deliver()
    status = harness.status(job)
    assert status["status"] == "finished" and status["version"] == 4
    credits = ledger(harness, job)
    a, b = credits[harness.volunteer_id("a")], credits[harness.volunteer_id("b")]
    assert (a["results"], b["results"]) == (1, 3)  # b completed 4: its stale one earned nothing
    assert a["credit"] == pytest.approx(PER_RESULT) and b["credit"] == pytest.approx(3 * PER_RESULT)
    assert (a["samples"], b["samples"]) == (4, 12)
    # the public leaderboard, most first, by display name and tag
    board = public_status(harness, job)["leaderboard"]
    assert [entry["name"] for entry in board] == [
        f"b ({harness.volunteer_id('b').split('.')[1][:4]})",
        f"a ({harness.volunteer_id('a').split('.')[1][:4]})",
    ]
    assert "volunteer_id" not in board[0]


def test_a_volunteer_reads_its_own_credit_with_its_token(harness):
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4))
    assert harness.work(harness.lease("a")).status_code == 200
    harness.deliver()
    token = harness.identity("a")["volunteer_token"]
    reply = harness.call("POST", "/volunteers/credit", {"job_id": job, "volunteer_token": token})
    assert reply.status_code == 200, reply.body
    mine = json.loads(reply.body)
    assert mine["volunteer_id"] == harness.volunteer_id("a") and mine["results"] == 1
    assert mine["credit"] == pytest.approx(PER_RESULT)
    fresh = harness.identity("newcomer")["volunteer_token"]
    none_yet = json.loads(harness.call("POST", "/volunteers/credit", {"job_id": job, "volunteer_token": fresh}).body)
    assert (none_yet["credit"], none_yet["results"]) == (0, 0)
    assert harness.call("POST", "/volunteers/credit", {"job_id": job}).status_code == 401
    assert harness.call("POST", "/volunteers/credit", {"job_id": "j-none", "volunteer_token": token}).status_code == 404


def test_a_job_without_points_keeps_no_credit(harness):
    job = harness.create_job(Dataset.generate(batches=2, batch_size=4), credit=False)
    while (task := harness.lease("a")) is not None:
        assert harness.work(task).status_code == 200
        harness.deliver()
    assert harness.status(job)["status"] == "finished"
    assert public_status(harness, job)["leaderboard"] == []
    assert services_module.services().credits.all(job) == []  # nothing recorded, not just hidden
    reply = harness.admin("GET", f"/jobs/{job}/credit")
    assert reply.status_code == 404 and b"keeps no credit" in reply.body
    token = harness.identity("a")["volunteer_token"]
    assert harness.call("POST", "/volunteers/credit", {"job_id": job, "volunteer_token": token}).status_code == 404


def test_the_ledger_is_for_the_operator_only(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4))
    assert harness.call("GET", f"/jobs/{job}/credit").status_code == 401
    assert harness.call("GET", f"/jobs/{job}/credit", headers={**ADMIN, "Authorization": "Bearer x"}).status_code == 401


def test_the_cli_prints_the_ledger_as_a_table_or_csv(monkeypatch, capsys):
    ledger_reply = {
        "job_id": "j-1",
        "unit": "samples x parameters / 1e6, over results folded into a version",
        "volunteers": [
            {"volunteer_id": "ada.0123456789ab", "name": "ada (0123)", "credit": 0.5, "results": 10, "samples": 320},
            {"volunteer_id": "v.fedcba987654", "name": "anonymous (fedc)", "credit": 0.05, "results": 1, "samples": 32},
        ],
    }
    calls = []
    monkeypatch.setattr(
        cli,
        "_api",
        lambda args: SimpleNamespace(call=lambda method, path: calls.append((method, path)) or ledger_reply),
    )
    cli.credit(SimpleNamespace(job="j-1", csv=False))
    table = capsys.readouterr().out.splitlines()
    assert calls == [("GET", "/jobs/j-1/credit")]
    assert table[0].split() == ["NAME", "VOLUNTEER", "CREDIT", "RESULTS", "SAMPLES"]
    assert table[1].split() == ["ada", "(0123)", "ada.0123456789ab", "0.5", "10", "320"]
    assert table[-1].startswith("credit: samples x parameters")
    cli.credit(SimpleNamespace(job="j-1", csv=True))
    assert capsys.readouterr().out.splitlines() == [
        "name,volunteer_id,credit,results,samples",
        "ada (0123),ada.0123456789ab,0.5,10,320",
        "anonymous (fedc),v.fedcba987654,0.05,1,32",
    ]
