"""The upload forms hold on AWS, not only on moto: moto enforces no POST
policy, so each form's signed policy is decoded here and every condition
checked (bucket, key, exact length, Content-Type, Content-Encoding and
Cache-Control), as is the signature: SigV4 (S3 refuses SigV2 for buckets
made since June 2020) for the bucket's region. A heartbeat hands out a fresh
form that lives as long as the renewed lease."""

import base64
import json
import time
from datetime import datetime, timezone

from chalicelib.store.objects import IMMUTABLE, UPLOAD_TYPE
from tests.harness import BUCKET, Dataset, job_body, token_payload


def policy(form: dict) -> dict:
    return json.loads(base64.b64decode(form["fields"]["policy"]))


def conditions(form: dict) -> tuple[dict, list]:
    """The policy's exact-match conditions as one dict, and its other conditions."""
    exact, other = {}, []
    for c in policy(form)["conditions"]:
        if isinstance(c, dict):
            exact.update(c)
        else:
            other.append(c)
    return exact, other


def expires_at(form: dict) -> float:
    return datetime.strptime(policy(form)["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def assert_sigv4(form: dict) -> None:
    fields = form["fields"]
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256" and fields["x-amz-signature"]
    assert fields["x-amz-credential"].endswith("/us-east-1/s3/aws4_request")
    assert "AWSAccessKeyId" not in fields and "signature" not in fields  # SigV2's fields
    assert ".s3.us-east-1.amazonaws.com" in form["url"]  # the regional endpoint, not s3.amazonaws.com
    exact, _ = conditions(form)
    assert exact["x-amz-algorithm"] == fields["x-amz-algorithm"]
    assert exact["x-amz-credential"] == fields["x-amz-credential"]


def test_a_gradient_form_is_sigv4_and_bound_to_one_key_the_exact_size_and_the_lease(harness):
    job = harness.create_job(Dataset.generate(batches=1, batch_size=4), lease_seconds=300)
    before = time.time()
    task = harness.lease()
    form = task["upload"]
    assert_sigv4(form)
    exact, other = conditions(form)
    key = f"grads/{job}/000000/{task['batch']:06d}/{token_payload(task)['lease_id']}.bin"
    assert exact["bucket"] == BUCKET and exact["key"] == form["fields"]["key"] == key
    assert exact["Content-Type"] == form["fields"]["Content-Type"] == UPLOAD_TYPE
    assert other == [["content-length-range", task["upload_bytes"], task["upload_bytes"]]]
    assert before + 300 - 2 <= expires_at(form) <= time.time() + 300 + 1


def test_a_heartbeat_hands_out_a_fresh_form_that_outlives_the_renewed_lease(harness):
    harness.create_job(Dataset.generate(batches=1, batch_size=4), lease_seconds=10)
    task = harness.lease()
    first = task["upload"]
    time.sleep(2)  # the renewed lease then ends after the first form does
    reply = harness.call("POST", "/tasks/heartbeat", {"job_id": task["job_id"], "lease_token": task["lease_token"]})
    assert reply.status_code == 200, reply.body
    renewed = json.loads(reply.body)
    form = renewed["upload"]
    assert_sigv4(form)
    assert conditions(form)[0]["key"] == conditions(first)[0]["key"]
    assert expires_at(form) >= renewed["lease_expires"] > expires_at(first)


def test_the_batch_form_is_bound_to_the_jobs_prefix_size_encoding_and_an_immutable_cache(harness):
    body = job_body(Dataset.generate(batches=2, batch_size=4))
    body["dataset"]["encoding"] = "gzip"
    reply = harness.admin("POST", "/jobs", body)
    assert reply.status_code == 201, reply.body
    created = json.loads(reply.body)
    form = created["upload"]["batches"]
    assert_sigv4(form)
    exact, other = conditions(form)
    assert exact["Content-Encoding"] == form["fields"]["Content-Encoding"] == "gzip"
    assert exact["Cache-Control"] == form["fields"]["Cache-Control"] == IMMUTABLE
    assert exact["Content-Type"] == UPLOAD_TYPE
    prefix = created["upload"]["batch_key_prefix"]
    assert ["starts-with", "$key", prefix] in other
    [length] = [c for c in other if c[0] == "content-length-range"]
    assert length[1] >= 1 and length[2] >= created["upload"]["batch_bytes"]
    weights = created["upload"]["weights"]
    assert_sigv4(weights)
    exact, other = conditions(weights)
    assert exact["key"].startswith(f"jobs/{created['job_id']}/") and other == [
        ["content-length-range", created["upload"]["weights_bytes"], created["upload"]["weights_bytes"]]
    ]
