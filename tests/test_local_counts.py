"""Counted black-box on the local stack (issue 37): every request the
local cloud makes of its moto server, recorded by moto's own request
recorder while volunteers and the operator use the HTTP API, then read
back and counted by DynamoDB action and key. The in-process twins of these
checks (tests/test_credit.py, tests/test_scale_paths.py) count boto3 calls;
these see only the wire."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections import Counter

import pytest
import requests

from crowdtrain.api import ApiError, post_form
from crowdtrain.local.process import LocalCloudProcess

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    process = LocalCloudProcess(tmp_path_factory.mktemp("counts"))
    yield process
    assert process.stop() == 0


class Recording:
    """moto's recorder, on for the `with` block: the DynamoDB requests made meanwhile, as (action, body)."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")

    def __enter__(self) -> "Recording":
        requests.post(f"{self.endpoint}/moto-api/recorder/reset-recording", timeout=10).raise_for_status()
        requests.post(f"{self.endpoint}/moto-api/recorder/start-recording", timeout=10).raise_for_status()
        return self

    def __exit__(self, *exc) -> None:
        requests.post(f"{self.endpoint}/moto-api/recorder/stop-recording", timeout=10).raise_for_status()
        text = requests.get(f"{self.endpoint}/moto-api/recorder/download-recording", timeout=30).text
        self.calls: list[tuple[str, str]] = []
        for entry in entries(text):
            target = {k.lower(): v for k, v in entry["headers"].items()}.get("x-amz-target", "")
            if target.startswith("DynamoDB_"):
                body = base64.b64decode(entry["body"]).decode() if entry["body_encoded"] else entry["body"] or ""
                self.calls.append((target.split(".", 1)[1], body))

    def writes(self, naming: str = "") -> list[tuple[str, str]]:
        return [(action, body) for action, body in self.calls if action in WRITES and naming in body]


def entries(text: str):
    """The recorded requests: JSON objects one after another (moto's server threads append them
    without a lock, so a line may hold two)."""
    decoder, at = json.JSONDecoder(), 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        entry, at = decoder.raw_decode(text, at)
        yield entry


def volunteers(stack, names) -> list[str]:
    api = stack.state["api"]
    return [requests.post(f"{api}/volunteers", json={"name": n}, timeout=10).json()["volunteer_token"] for n in names]


def lease(stack, token: str, job: str) -> dict:
    """A task of `job` (another job's, met first, is handed back)."""
    api = stack.state["api"]
    for _ in range(20):
        reply = requests.post(f"{api}/tasks/lease", json={"volunteer_token": token}, timeout=30)
        assert reply.status_code in (200, 204), reply.text
        if reply.status_code == 200 and reply.json()["job_id"] == job:
            return reply.json()
        if reply.status_code == 200:
            body = {"job_id": reply.json()["job_id"], "lease_token": reply.json()["lease_token"]}
            requests.post(f"{api}/tasks/release", json={**body, "volunteer_token": token, "reason": "stopped"})
        time.sleep(0.2)
    raise AssertionError(f"no task of {job}")


def deliver(stack, token: str, task: dict) -> None:
    """Upload a zero gradient (finite, within the norm bound) through the lease's form, and complete."""
    size = sum(4 * math.prod(w["shape"]) for w in task["spec"]["weights"])
    post_form(task["upload"], bytes(size))
    body = {"job_id": task["job_id"], "lease_token": task["lease_token"], "volunteer_token": token, "loss": 4.0}
    reply = requests.post(f"{stack.state['api']}/tasks/complete", json=body, timeout=30)
    assert reply.status_code == 200, reply.text


def test_a_jobs_status_reads_no_lease_record_with_ten_leases_out(stack):
    """GET /jobs/{id} (what `crowdtrain watch` polls) with 10 leases out: no DynamoDB request names a lease."""
    job = stack.char_lstm_job(batches=12, epochs=1, lease_seconds=300)
    for token in volunteers(stack, [f"out-{i}" for i in range(10)]):
        lease(stack, token, job)
    with Recording(stack.state["aws_endpoint"]) as recording:
        status = stack.api.call("GET", f"/jobs/{job}")
    assert status["tasks"]["in_flight"] == 10
    reads = [(action, body) for action, body in recording.calls if action not in WRITES]
    assert reads and not any("LEASE#" in body or f"JOB#{job}#L" in body for _, body in recording.calls), reads


def test_an_update_of_ten_identities_writes_credit_off_the_folds_path(stack):
    """K = 10 results from 10 identities, credit on and off: the fold's writes (META, the version, the
    fold log) are as many either way, and the credit items are written once per identity afterwards
    (the tally), plus the leaderboard and the tally's marks: O(1) writes per update on the fold's path."""
    counted = {}
    for credit in (True, False):
        job = stack.char_lstm_job(batches=10, epochs=1, k=10, credit=credit)
        tokens = volunteers(stack, [f"{'on' if credit else 'off'}-{i}" for i in range(10)])
        tasks = [lease(stack, token, job) for token in tokens]
        with Recording(stack.state["aws_endpoint"]) as recording:
            for token, task in zip(tokens, tasks):
                deliver(stack, token, task)
            deadline = time.monotonic() + 60
            while stack.api.call("GET", f"/jobs/{job}")["version"] < 1:
                assert time.monotonic() < deadline, "the update did not fold"
                time.sleep(0.5)
            # the tally after the commit (every 2 s on the local stack): each identity's credit shown
            while credit and len(stack.api.call("GET", f"/jobs/{job}/credit")["volunteers"]) < 10:
                assert time.monotonic() < deadline, "the tally did not run"
                time.sleep(0.5)
            time.sleep(0.5 if credit else 2.5)  # its last marks; a job without points: a tally's time
        credit_items = recording.writes(f"JOB#{job}#C")
        meta = recording.writes(f'"S": "JOB#{job}"}}, "sk": {{"S": "META"')
        activity = recording.writes(f'"S": "JOB#{job}"}}, "sk": {{"S": "ACTIVITY#')
        counted[credit] = (len(credit_items), len(meta), len(activity), len(recording.writes(f"JOB#{job}")))
    (items_on, meta_on, activity_on, all_on), (items_off, meta_off, activity_off, all_off) = (
        counted[True],
        counted[False],
    )
    assert items_off == 0 and items_on == 10, counted  # each identity's credit item once, by the tally
    # the fold commits the update alike: each fold invocation writes META and the minute's activity once for
    # the results it took, and the dispatcher hands over the ten as they arrive (one invocation or several):
    # nothing per identity on its path, where a write per identity would be ten more
    assert meta_on == activity_on > 0 and meta_off == activity_off > 0, counted
    assert abs(meta_on - meta_off) <= 2, counted
    per_invocation_on, per_invocation_off = meta_on + activity_on, meta_off + activity_off
    # besides: the leaderboard and the tally's two marks
    assert (all_on - per_invocation_on) - (all_off - per_invocation_off) == items_on + 3, counted


def test_pause_resume_and_delete_racing_a_busy_fold_never_answer_5xx(stack):
    """Issue 40 over HTTP: 50 pauses, 50 resumes and 50 deletes of a job
    whose fold keeps moving its META (a volunteer delivering results as fast
    as it can) answer 2xx or 409, never 5xx, and the fold goes on meanwhile."""
    job = stack.char_lstm_job(batches=300, epochs=1, lease_seconds=300)
    api, stop = stack.state["api"], threading.Event()

    def volunteer(token: str) -> None:
        while not stop.is_set():
            reply = requests.post(f"{api}/tasks/lease", json={"volunteer_token": token}, timeout=30)
            if reply.status_code != 200 or reply.json().get("job_id") != job or reply.json()["kind"] != "train":
                time.sleep(0.5)  # none now (the job is paused): asks again soon, as a page does later
                continue
            task = reply.json()
            post_form(task["upload"], bytes(sum(4 * math.prod(w["shape"]) for w in task["spec"]["weights"])))
            body = {"job_id": job, "lease_token": task["lease_token"], "volunteer_token": token, "loss": 4.0}
            requests.post(f"{api}/tasks/complete", json=body, timeout=30)  # a 409 once the job is paused or gone

    def admin(method: str, path: str) -> int:
        try:
            stack.api.call(method, path)
            return 200
        except ApiError as err:
            return err.status

    threads = [threading.Thread(target=volunteer, args=(token,)) for token in volunteers(stack, ["busy"])]
    for thread in threads:
        thread.start()
    try:
        stack.wait_for(job, lambda s: s["version"] >= 3, timeout=60)  # the fold is busy
        codes = Counter()
        for _ in range(50):
            codes[admin("POST", f"/jobs/{job}/pause")] += 1
            codes[admin("POST", f"/jobs/{job}/resume")] += 1
        folded = stack.api.call("GET", f"/jobs/{job}")["version"]
        for _ in range(50):
            codes[admin("DELETE", f"/jobs/{job}")] += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    # 409: the fold moved META five times under one action; 404: a delete asked again once the job was gone
    assert set(codes) <= {200, 404, 409} and codes[200] >= 75, codes
    assert folded > 3, "the fold did not move during the races"


def test_after_two_folds_a_second_apart_the_public_document_shows_the_second_within_20_s(stack):
    """Issue 40 over HTTP: both folds land inside the 5 s after the start's
    document, so the fold skips both; the one message it sends, delayed until
    the interval ends, has the local stack's publish_status write version 2."""
    job = stack.char_lstm_job(batches=4, epochs=1, lease_seconds=300)
    [token] = volunteers(stack, ["twice"])
    for _ in range(2):
        deliver(stack, token, lease(stack, token, job))
        stack.wait_for(job, lambda s, v=_ + 1: s["version"] >= v, timeout=20)
        time.sleep(1)
    folded = time.monotonic()
    while (public := requests.get(f"{stack.state['api']}/progress/{job}", timeout=10).json())["version"] < 2:
        assert time.monotonic() - folded < 20, public["version"]
        time.sleep(0.5)
