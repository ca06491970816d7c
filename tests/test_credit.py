"""Credit (fold/credit.py): each identity earns samples x parameters / 1e6
for every result of its folded into a version, and nothing else; the
public status document ranks the top identities, a volunteer reads its own
with its token, the operator exports every identity's (`crowdtrain credit`)."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest

from chalicelib import services as services_module
from chalicelib.fold.credit import CreditNotices
from chalicelib.store.credits import Credits
from chalicelib.store.table import item_size, job_key
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
    assert services_module.services().meta.get(job).last_fold.earned == ()  # not even in the fold log
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


WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def dynamodb_writes(client) -> Counter:
    """Every DynamoDB write the client makes from now on, by operation."""
    calls: Counter = Counter()
    client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.update([model.name] if model.name in WRITES else [])
    )
    return calls


def write_units(job: str, sort_keys: tuple[str, ...]) -> int:
    """What writing these items of the job's partition costs: a write unit per KB begun."""
    table = services_module.services()._table
    return sum(-(-item_size(table.get_item(Key=job_key(job, sk))["Item"]) // 1024) for sk in sort_keys)


def test_an_update_of_ten_identities_writes_no_credit_in_the_fold(harness):
    """K = 10 results from 10 identities: the fold's update makes as many
    DynamoDB writes with credit on as with it off (what each earned rides in
    META's commit and the fold log entry, a few hundred bytes more: at most 2
    write units), and the tally that follows writes each identity once."""
    client = services_module.services()._table.meta.client
    figures = {}
    for credit in (True, False):
        job = harness.create_job(Dataset.generate(batches=10, batch_size=4), gradients_per_update=10, credit=credit)
        for i in range(10):
            assert harness.work(harness.lease(f"{'on' if credit else 'off'}-{i}")).status_code == 200
        messages = harness.result_messages()
        assert len(messages) == 10
        writes = dynamodb_writes(client)
        harness.invoke_fold([m["Body"] for m in messages])
        fold_writes = sum(writes.values())
        for m in messages:
            harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])
        assert harness.status(job)["version"] == 1
        writes.clear()
        harness.deliver()  # the credit tally the commit asked for (none without points)
        figures[credit] = (fold_writes, write_units(job, ("META", "VER#0000000001")), sum(writes.values()))
    (fold_on, units_on, tally_on), (fold_off, units_off, tally_off) = figures[True], figures[False]
    assert fold_on == fold_off, figures
    assert units_on - units_off <= 2, figures
    # the tally: each identity's item once, the leaderboard, and the two marks of its range
    assert (tally_on, tally_off) == (10 + 3, 0), figures


class Crash(Exception):
    pass


def test_a_tally_cut_short_or_run_again_counts_each_version_once(harness, monkeypatch):
    """A pass that crashes after crediting one identity is taken again over
    the same range, however far the fold got meanwhile; a pass that ends late
    cannot close the range another pass took."""
    tally = services_module.services().credit_tally
    monkeypatch.setattr(CreditNotices, "committed", lambda *args: None)  # the test runs every pass itself
    job = harness.create_job(Dataset.generate(batches=12, batch_size=4), gradients_per_update=2)
    names = ("a", "b", "c", "d")

    def fold_round():  # each identity folds one result: two versions
        for name in names:
            assert harness.work(harness.lease(name)).status_code == 200
        harness.deliver()

    add = Credits.add

    def crashing(self, job_id, earned, through):  # credits the first identity, then the Lambda dies
        add(self, job_id, dict(list(earned.items())[:1]), through)
        raise Crash()

    def cut_pass():
        monkeypatch.setattr(Credits, "add", crashing)
        with pytest.raises(Crash):
            tally.tally(job)
        monkeypatch.setattr(Credits, "add", add)

    fold_round()  # versions 1-2
    cut_pass()  # range 1-2 taken, one identity credited
    fold_round()  # versions 3-4
    assert tally.tally(job) == 2  # the same range again, not 1-4
    cut_pass()  # range 3-4 taken
    tally.tallies.finish(job, 2)  # a slow pass of range 1-2 ends now: range 3-4 stays open
    fold_round()  # versions 5-6
    assert [tally.tally(job) for _ in range(3)] == [2, 2, 0]
    credits = ledger(harness, job)
    assert {(c["results"], c["samples"]) for c in credits.values()} == {(3, 12)}
    assert all(c["credit"] == pytest.approx(3 * PER_RESULT) for c in credits.values())
    assert {entry["results"] for entry in public_status(harness, job)["leaderboard"]} == {3}


def test_two_passes_that_begin_together_take_one_range(harness):
    tallies = services_module.services().credit_tally.tallies
    first, second = tallies.read("j-race"), tallies.read("j-race")
    assert tallies.begin("j-race", second, 2, 1000) == (0, 2)
    assert tallies.begin("j-race", first, 4, 1000) == (0, 2)  # the range begun, not a longer one


def test_a_tally_is_asked_for_once_a_window_and_after_the_last_version():
    sent = []
    clock = [120.0]
    queue = SimpleNamespace(send_credit_due=lambda due, window: sent.append(window))
    notices = CreditNotices(queue, 60, lambda: clock[0])
    spec = SimpleNamespace(credit=True)
    running = SimpleNamespace(job_id="j-1", version=3, status="running")
    notices.committed(running, spec)
    clock[0] = 179.0
    notices.committed(SimpleNamespace(**{**running.__dict__, "version": 4}), spec)
    clock[0] = 180.0
    notices.committed(SimpleNamespace(**{**running.__dict__, "version": 5}), spec)
    notices.committed(SimpleNamespace(job_id="j-1", version=6, status="finished"), spec)
    notices.committed(running, SimpleNamespace(credit=False))
    # SQS keeps one message per deduplication id: the first two share a window
    assert sent == ["j-1-t2", "j-1-t2", "j-1-t3", "j-1-v6"]
