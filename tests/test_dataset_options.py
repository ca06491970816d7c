"""Dataset options. gzip-encoded batch files: uploaded compressed through the
presigned form, checked at start, stored with Content-Encoding so that
CloudFront (here the local edge server) serves them as they are and the
volunteer's fetch inflates them. micro_batch: handed to volunteers, whose
trainer computes a batch that many samples at a time
(frontend/test/microbatch.test.mjs)."""

from __future__ import annotations

import gzip
import json

import pytest
import requests

from crowdtrain.local.edge import EdgeServer
from tests.harness import BUCKET, Dataset, job_body
from tests.test_lifecycle import drain


def test_gzip_job_trains_from_compressed_files(harness):
    ds = Dataset.generate(batches=3, batch_size=8)
    job = harness.create_job(ds, encoding="gzip")
    stored = harness.s3.get_object(Bucket=BUCKET, Key=f"jobs/{job}/data/batch-000000.bin")
    assert stored["ContentEncoding"] == "gzip"
    assert gzip.decompress(stored["Body"].read()) == ds.batch_bytes(0)
    assert harness.status(job)["spec"]["dataset"]["encoding"] == "gzip"
    assert drain(harness) == 3
    assert harness.status(job)["version"] == 3


def test_upload_form_names_the_encoding_and_the_inflated_size(harness):
    ds = Dataset.generate(batches=2, batch_size=8)
    body = job_body(ds)
    body["dataset"]["encoding"] = "gzip"
    reply = harness.admin("POST", "/jobs", body)
    assert reply.status_code == 201, reply.body
    upload = json.loads(reply.body)["upload"]
    assert upload["batch_encoding"] == "gzip"
    assert upload["batch_bytes"] == len(ds.batch_bytes(0))
    assert upload["batches"]["fields"]["Content-Encoding"] == "gzip"


@pytest.mark.parametrize(
    "files, message",
    [
        (lambda ds: [ds.batch_bytes(0), gzip.compress(ds.batch_bytes(1))], "batch 0 is not gzip data"),
        (
            lambda ds: [gzip.compress(ds.batch_bytes(0)[:-4]), gzip.compress(ds.batch_bytes(1))],
            "batch 0 inflates to 156 bytes",
        ),
        (lambda ds: [gzip.compress(ds.batch_bytes(0))], "1 of 2 batch files are missing"),
    ],
    ids=["uncompressed", "wrong_layout", "missing"],
)
def test_start_refuses_gzip_batches_that_do_not_inflate_to_the_layout(harness, files, message):
    ds = Dataset.generate(batches=2, batch_size=8)
    job = harness.create_job(ds, start=False, encoding="gzip", files=files(ds))
    reply = harness.admin("POST", f"/jobs/{job}/start")
    assert reply.status_code == 400 and message in json.loads(reply.body)["Message"], reply.body
    assert harness.status(job)["status"] == "uploading"


def test_edge_server_serves_gzip_files_as_stored_and_clients_inflate_them(harness, tmp_path):
    ds = Dataset.generate(batches=1, batch_size=8)
    job = harness.create_job(ds, encoding="gzip")
    key = f"jobs/{job}/data/batch-000000.bin"
    stored = harness.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    edge = EdgeServer(tmp_path, harness.s3, BUCKET, {}).start()
    try:
        reply = requests.get(edge.url + key, timeout=10)
    finally:
        edge.stop()
    assert reply.headers["Content-Encoding"] == "gzip"
    assert int(reply.headers["Content-Length"]) == len(stored)  # the compressed bytes went over the wire
    assert reply.content == ds.batch_bytes(0)  # requests inflates, as a browser's fetch does


@pytest.mark.parametrize("micro_batch, public", [(None, 8), (8, 8), (2, 2)])
def test_leases_tell_volunteers_the_micro_batch(harness, micro_batch, public):
    ds = Dataset.generate(batches=1, batch_size=8)
    job = (
        harness.create_job(ds)
        if micro_batch is None
        else harness.create_job(ds, dataset={**job_body(ds)["dataset"], "micro_batch": micro_batch})
    )
    assert harness.lease()["spec"]["dataset"]["micro_batch"] == public
    assert harness.status(job)["spec"]["dataset"]["micro_batch"] == public
