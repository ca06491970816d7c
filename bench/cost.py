"""Requests and bytes per task, per AWS service and codec, and dollars per
million training samples at AWS's public list prices.

Request counts are measured: tasks run through the real handlers on moto
(in-process), and every boto3 call the app makes is counted by a botocore
hook; Lambda's SQS poller (played here by the test harness) is added as one
receive and one delete batch per fold invocation. Bytes follow from the job
spec (what the browser downloads through CloudFront and uploads to S3), the
batch files' at their gzip-encoded size.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import time
from collections import Counter

import boto3
import numpy as np

from bench import common
from tests.harness import Dataset, Harness

# us-east-1 list prices (USD) as published by AWS (2024-2025 price pages; the
# DynamoDB on-demand prices are those after the November 2024 reduction).
# Check the current pages before relying on the totals.
PRICES = {
    "api_gateway_rest_per_request": 3.50e-6,
    "lambda_per_request": 0.20e-6,
    "lambda_per_gb_second": 0.0000166667,
    "sqs_standard_per_request": 0.40e-6,
    "sqs_fifo_per_request": 0.50e-6,
    "s3_put_post_list_per_request": 0.005e-3,
    "s3_get_head_per_request": 0.0004e-3,
    "dynamodb_per_write_unit": 0.625e-6,
    "dynamodb_per_read_unit": 0.125e-6,
    "cloudfront_per_gb": 0.085,
    "cloudfront_per_https_request": 0.0100e-4,
}
SAMPLES_PER_TASK = (32, 128, 512, 1024, 2048)
LOCAL_STEPS = (1, 8, 16, 32)
GZIP_SAMPLE_BATCHES = 16
LAMBDA_GB = 1.0  # .chalice/config.json lambda_memory_size = 1024
S3_WRITES = {"PutObject", "ListObjectsV2", "DeleteObjects", "PostObject"}


def paper_model() -> dict:
    """The paper's model as the char-lstm template builds it: LSTM(10) -> LSTM(10)
    -> Dense(128), one-hot over 128, sequences of 1024, batch 32, uint8 token ids,
    batch files gzip-encoded (their compressed size measured on KJV batches)."""
    from chalicelib.domain.sections import BATCH_DTYPES
    from crowdtrain.jobs.charlstm import CharLSTM
    from crowdtrain.jobs.corpus import kjv_text

    model = CharLSTM()
    dataset = model.job_spec(1)["dataset"]
    batch_bytes = sum(math.prod(dataset[half]["shape"]) * BATCH_DTYPES[dataset[half]["dtype"]] for half in "xy")
    x, y = model.batches(kjv_text(), GZIP_SAMPLE_BATCHES)
    stored = [len(gzip.compress(model.batch_file(x[b], y[b]), mtime=0)) for b in range(GZIP_SAMPLE_BATCHES)]
    return {
        "parameters": sum(math.prod(w["shape"]) for w in model.weight_specs()),
        "batch": model.batch_size,
        "seq": model.seq_len,
        "batch_bytes": batch_bytes,
        "token_dtype": dataset["x"]["dtype"],
        "batch_encoding": dataset["encoding"],
        "batch_stored_bytes": round(float(np.mean(stored))),
    }


PAPER = paper_model()


# AWS requests per task measured by this script at commit 0c42dcd (before the
# batched fold), one result per fold invocation, K = 3: bench/results/cost.json then.
BEFORE_TOTAL = 27.35


def measure(tasks: int, k: int, per_fold: int = 10, local_steps: int = 0, fold_groups: int = 1) -> dict:
    """Run `tasks` tasks through the handlers, `per_fold` results to each fold
    invocation (as Lambda's SQS batch hands them), each task of `local_steps`
    batches if set, in `fold_groups` groups (then partial sums follow the
    results through the queue, and are folded too); count the app's AWS calls."""
    from moto import mock_aws

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        ADMIN_TOKEN="test-admin-token",
        LEASE_WAIT_SECONDS="0",
        # every simulated volunteer calls from one address
        MAX_LEASES_PER_ADDRESS="100000",
        VOLUNTEERS_PER_ADDRESS_PER_HOUR="1000000",
        DISTINCT_ADDRESSES="0",
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    calls: Counter = Counter()
    timings: dict[str, list[float]] = {"lease": [], "complete": [], "fold": []}
    with mock_aws():
        names = Harness.create_resources(boto3.Session(region_name="us-east-1"))
        os.environ.update(names)
        with Harness() as harness:
            ds = Dataset.generate(batches=tasks * max(1, local_steps), batch_size=8)
            local = {"local_steps": {"steps": local_steps}} if local_steps else {}
            harness.create_job(ds, gradients_per_update=k, fold_groups=fold_groups, **local)
            boto3.setup_default_session(region_name="us-east-1")

            def count(model, **_):
                calls[(model.service_model.service_name, model.name)] += 1

            def count_write_units(params, model, **_):
                calls[("dynamodb", "write units")] += write_units(model.name, params)
                calls[("dynamodb", "read units")] += read_units(model.name, params)
                for partition, units in partition_write_units(model.name, params).items():
                    calls[("dynamodb-partition", f"{partition} write units")] += units

            boto3.DEFAULT_SESSION.events.register("before-call", count)
            boto3.DEFAULT_SESSION.events.register("before-parameter-build.dynamodb", count_write_units)
            from chalicelib import services

            services.reset()  # rebuild the app's clients on the counted session
            invocations = 0
            for first in range(0, tasks, per_fold):
                for n in range(first, min(tasks, first + per_fold)):
                    start = time.perf_counter()
                    task = harness.lease(f"volunteer-{n % per_fold}")
                    timings["lease"].append(time.perf_counter() - start)
                    loss, data = harness.compute(task)
                    harness.upload(task, data)
                    calls[("s3", "PostObject")] += 1  # the browser's upload through the presigned form
                    start = time.perf_counter()
                    assert harness.complete(task, loss).status_code == 200
                    timings["complete"].append(time.perf_counter() - start)
                # this invocation's results, and at the end every partial sum left
                while messages := harness.result_messages(max_messages=per_fold):
                    start = time.perf_counter()
                    harness.invoke_fold([m["Body"] for m in messages])
                    timings["fold"].append((time.perf_counter() - start) / len(messages))
                    invocations += 1
                    for m in messages:
                        harness.sqs.delete_message(QueueUrl=harness.results_url, ReceiptHandle=m["ReceiptHandle"])
                    if first + per_fold < tasks:
                        break
    calls[("sqs-fifo", "ReceiveMessage (Lambda poller)")] += invocations
    calls[("sqs-fifo", "DeleteMessageBatch (Lambda poller)")] += invocations
    per_task = {f"{service}:{op}": n / tasks for (service, op), n in sorted(calls.items())}
    seconds = {key: sum(v) / len(v) for key, v in timings.items()}
    return {
        "tasks": tasks,
        "k": k,
        "results_per_fold": per_fold,
        "local_steps": local_steps,
        "fold_groups": fold_groups,
        "fold_invocations_per_task": invocations / tasks,
        "calls_per_task": per_task,
        "handler_seconds": seconds,
    }


def read_units(operation: str, params: dict) -> int:
    """DynamoDB read requests of one call, counted as one unit per item asked
    for (every item read here is under 4 KB, and reads are consistent)."""
    if operation == "BatchGetItem":
        return sum(len(request["Keys"]) for request in params["RequestItems"].values())
    return 1 if operation in ("GetItem", "Query") else 0


def partition_of(pk: str) -> str:
    """A partition key's kind: the job's own (`JOB#<id>`), one of its shards
    (`JOB#<id>#<shard>`), a volunteer's or an address's (one per client), the job list."""
    if pk.startswith("JOB#"):
        return "job" if "#" not in pk[4:] else "job shard " + pk[4:].split("#", 1)[1].rstrip("0123456789")
    return pk.split("#", 1)[0].lower()


def partition_write_units(operation: str, params: dict) -> dict[str, int]:
    """Write units of one call by the kind of partition key they land on."""
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        key = params.get("Item") or params["Key"]
        return {partition_of(_text(key["pk"])): write_units(operation, params)}
    out: dict[str, int] = {}
    if operation == "BatchWriteItem":
        for requests in params["RequestItems"].values():
            for r in requests:
                body = r.get("PutRequest", {}).get("Item") or r["DeleteRequest"]["Key"]
                kind = partition_of(_text(body["pk"]))
                out[kind] = out.get(kind, 0) + write_units("BatchWriteItem", {"RequestItems": {"": [r]}})
    return out


def _text(value: object) -> str:
    return value["S"] if isinstance(value, dict) else str(value)  # a client's typed value, or a resource's


def write_units(operation: str, params: dict) -> int:
    """DynamoDB on-demand write units of one call: one per started KB of each
    item written (item size approximated by its JSON), twice that in a
    transaction; an update touches our small lease and counter items (1 unit)."""

    def units(item: dict) -> int:
        return max(1, math.ceil(len(json.dumps(item, default=str)) / 1024))

    if operation == "PutItem":
        return units(params["Item"])
    if operation in ("UpdateItem", "DeleteItem"):  # small items here: a lease, a counter, a slot
        return 1
    if operation == "BatchWriteItem":
        return sum(
            units(r["PutRequest"]["Item"]) if "PutRequest" in r else 1
            for requests in params["RequestItems"].values()
            for r in requests
        )
    if operation == "TransactWriteItems":
        return sum(
            2 * (units(body["Item"]) if "Item" in body else 1)
            for entry in params["TransactItems"]
            for body in entry.values()
        )
    return 0


def dollars(
    calls: dict[str, float],
    seconds: dict[str, float],
    batch: int,
    download: float,
    upload: int,
    fold_invocations_per_task: float,
) -> dict[str, float]:
    """Cost of one task, by service."""
    p = PRICES
    sqs_fifo = sum(
        n for key, n in calls.items() if key.startswith("sqs-fifo") or (key.startswith("sqs:") and "results" in key)
    )
    sqs = sum(n for key, n in calls.items() if key.startswith("sqs:"))
    s3_writes = sum(n for key, n in calls.items() if key.startswith("s3:") and key.split(":")[1] in S3_WRITES)
    s3_reads = sum(n for key, n in calls.items() if key.startswith("s3:")) - s3_writes
    ddb_writes = calls["dynamodb:write units"]
    ddb_reads = calls.get("dynamodb:read units", 0.0)
    lambda_seconds = seconds["lease"] + seconds["complete"] + seconds["fold"] * fold_invocations_per_task
    cost = {
        "API Gateway": 2 * p["api_gateway_rest_per_request"],
        "Lambda": (2 + fold_invocations_per_task) * p["lambda_per_request"]
        + lambda_seconds * LAMBDA_GB * p["lambda_per_gb_second"],
        "SQS": sqs * p["sqs_standard_per_request"] + sqs_fifo * p["sqs_fifo_per_request"],
        "S3": s3_writes * p["s3_put_post_list_per_request"] + s3_reads * p["s3_get_head_per_request"],
        "DynamoDB": ddb_writes * p["dynamodb_per_write_unit"] + ddb_reads * p["dynamodb_per_read_unit"],
        "CloudFront": download / 1e9 * p["cloudfront_per_gb"] + 2 * p["cloudfront_per_https_request"],
    }
    return {service: value * 1e6 / batch for service, value in cost.items()}  # per million samples


def total_calls(calls: dict[str, float]) -> float:
    """AWS requests per task (the browser's upload and the billing units aside)."""
    return sum(n for key, n in calls.items() if not key.endswith(" units") and key != "s3:PostObject")


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    tasks = 10 if args.quick else 60
    by_share = {1.0: measure(tasks=tasks, k=3, per_fold=1), 0.1: measure(tasks=tasks, k=3, per_fold=10)}
    measured = by_share[0.1]
    calls, seconds = measured["calls_per_task"], measured["handler_seconds"]
    print("AWS requests per completed task (lease + complete + fold), ten results per fold invocation:")
    for key, n in calls.items():
        print(f"  {key:<45} {n:6.2f}")
    requests, light = total_calls(calls), total_calls(by_share[1.0]["calls_per_task"])
    print(
        f"  {'total (upload and billing units aside)':<45} {requests:6.2f}   (one result per invocation: {light:.2f})"
    )
    print(
        f"  before the batched fold (commit 0c42dcd): {BEFORE_TOTAL:.2f} per task at one result per invocation, "
        f"{BEFORE_TOTAL - 1.8:.2f} with the Lambda poller's two calls amortized over ten; "
        f"now {requests / (BEFORE_TOTAL - 1.8):.0%} of that; target at most half: "
        f"{'met' if requests <= (BEFORE_TOTAL - 1.8) / 2 else 'NOT met'}"
    )
    rows = []
    weights = 4 * PAPER["parameters"]
    for codec, gradient in (
        ("fp32", 4 * PAPER["parameters"]),
        ("fp16", 2 * PAPER["parameters"]),
        ("int8", PAPER["parameters"] + 4 * 8),
    ):
        for fold_share, note in (
            (1.0, "one fold invocation per task (light load)"),
            (0.1, "ten results per fold invocation (busy)"),
        ):
            share_calls, share_seconds = by_share[fold_share]["calls_per_task"], by_share[fold_share]["handler_seconds"]
            per_million = dollars(
                share_calls, share_seconds, PAPER["batch"], weights + PAPER["batch_stored_bytes"], gradient, fold_share
            )
            total = sum(per_million.values())
            rows.append(
                {
                    "codec": codec,
                    "fold_invocations_per_task": fold_share,
                    "note": note,
                    "download_bytes": weights + PAPER["batch_stored_bytes"],
                    "upload_bytes": gradient,
                    "dollars_per_million_samples": per_million,
                    "total": total,
                }
            )
            print(
                f"{codec}, {note}: ${total:.3f} per million samples "
                + ", ".join(f"{k} {v:.3f}" for k, v in per_million.items())
            )
    best = min(r["total"] for r in rows)
    print(f"target <= $0.10 per million samples: best ${best:.3f} -> {'met' if best <= 0.10 else 'NOT met'}")
    # Requests per task do not depend on how many samples a task holds; bytes do.
    # So the same measured counts give the cost of larger tasks (a larger batch).
    # Local steps: a task of H mini-batches of the paper's 32 sequences, measured through the handlers
    local_rows = []
    for steps in LOCAL_STEPS:
        counted = (
            measure(tasks=10 if args.quick else 20, k=3, per_fold=10, local_steps=steps) if steps > 1 else measured
        )
        samples = steps * PAPER["batch"]
        task_requests = total_calls(counted["calls_per_task"]) + 1  # and the browser's upload
        model_bytes = weights + 4 * PAPER["parameters"]  # the version down, the pseudo-gradient up
        per_million = dollars(
            counted["calls_per_task"],
            counted["handler_seconds"],
            samples,
            weights + steps * PAPER["batch_stored_bytes"],
            4 * PAPER["parameters"],
            0.1,
        )
        local_rows.append(
            {
                "local_steps": steps,
                "samples_per_task": samples,
                "requests_per_task": task_requests,
                "requests_per_sample": task_requests / samples,
                "model_bytes_per_sample": model_bytes / samples,
                "data_bytes_per_sample": PAPER["batch_stored_bytes"] / PAPER["batch"],
                "dollars_per_million_samples": per_million,
                "total": sum(per_million.values()),
            }
        )
        print(
            f"local steps H = {steps:2d}: {task_requests:.1f} requests per task, "
            f"{task_requests / samples:.4f} per sample, "
            f"model and gradient {model_bytes / samples:,.0f} B per sample (+ data "
            f"{PAPER['batch_stored_bytes'] / PAPER['batch']:.0f} B), ${local_rows[-1]['total']:.3f} per million samples"
        )
    ratio = local_rows[0]["requests_per_sample"] / local_rows[-1]["requests_per_sample"]
    print(
        f"target: H = 32 with at least 20x fewer requests per sample than H = 1: {ratio:.1f}x, "
        f"{'met' if ratio >= 20 else 'NOT met'}; <= $0.10 per million samples at H = 32: "
        f"{'met' if local_rows[-1]['total'] <= 0.10 else 'NOT met'}"
    )
    sweep = []
    for samples in SAMPLES_PER_TASK:
        batch_bytes = PAPER["batch_stored_bytes"] * samples // PAPER["batch"]
        per_million = dollars(calls, seconds, samples, weights + batch_bytes, 4 * PAPER["parameters"], 0.1)
        sweep.append(
            {
                "samples_per_task": samples,
                "dollars_per_million_samples": per_million,
                "total": sum(per_million.values()),
            }
        )
        print(
            f"fp32, busy, {samples:5d} samples per task: ${sweep[-1]['total']:.3f} per million samples "
            f"(CloudFront {per_million['CloudFront']:.3f})"
        )
    common.save(
        "cost",
        {
            "measured": measured,
            "measured_light": by_share[1.0],
            "calls_per_task_total": requests,
            "calls_per_task_before": BEFORE_TOTAL,
            "paper_model": PAPER,
            "prices": PRICES,
            "rows": rows,
            "samples_sweep": sweep,
            "local_steps": local_rows,
            "target": 0.10,
            "target_met": best <= 0.10,
            "tasks_per_million_samples": math.ceil(1e6 / PAPER["batch"]),
        },
        args,
    )


if __name__ == "__main__":
    main()
