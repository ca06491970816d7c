"""Drives the real Chalice app the way AWS would: API requests through
chalice.test.Client, uploads through the presigned POST forms, and the fold
Lambda fed from the results FIFO queue like Lambda's SQS event source
(delete on success, redeliver on failure)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import requests
from chalice.test import Client

import app as app_module
from chalicelib import services as services_module
from chalicelib.domain.codecs import get_codec
from chalicelib.domain.records import CreditDue, fold_message
from chalicelib.domain.schema import parse_job
from chalicelib.store.table import job_partitions
from crowdtrain.api import post_form

ADMIN = {"Authorization": "Bearer test-admin-token", "Content-Type": "application/json"}
JSON = {"Content-Type": "application/json"}
TABLE = "crowdtrain-test"
BUCKET = "crowdtrain-test-data"
PUBLIC = f"https://{BUCKET}.s3.amazonaws.com/"
TASK_MAX_RECEIVES = 10


def token_payload(task: dict[str, Any]) -> dict[str, Any]:
    """What a lease token says (`v2.<key id>.<payload>.<mac>`): readable by its holder, not changeable."""
    body = task["lease_token"].split(".")[2]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def softmax_topology(features: int, classes: int) -> dict[str, Any]:
    """A Keras/TF.js topology: one Dense softmax layer (multinomial logistic regression)."""
    return {
        "class_name": "Sequential",
        "config": {
            "name": "softmax_regression",
            "layers": [
                {
                    "class_name": "Dense",
                    "config": {
                        "name": "dense",
                        "units": classes,
                        "activation": "softmax",
                        "use_bias": True,
                        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                        "bias_initializer": {"class_name": "Zeros", "config": {}},
                        "kernel_regularizer": None,
                        "bias_regularizer": None,
                        "activity_regularizer": None,
                        "kernel_constraint": None,
                        "bias_constraint": None,
                        "trainable": True,
                        "batch_input_shape": [None, features],
                        "dtype": "float32",
                    },
                }
            ],
        },
        "keras_version": "tfjs-layers 4.22.0",
        "backend": "tensor_flow.js",
    }


@dataclass
class Dataset:
    """Separable-ish classes drawn from Gaussians around fixed centres."""

    x: np.ndarray  # [batches, B, features] float32
    y: np.ndarray  # [batches, B] int32

    @classmethod
    def generate(cls, batches: int, batch_size: int, features: int = 4, classes: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        centres = rng.normal(scale=2.0, size=(classes, features))
        y = rng.integers(0, classes, size=(batches, batch_size))
        x = centres[y] + rng.normal(size=(batches, batch_size, features))
        return cls(x.astype(np.float32), y.astype(np.int32))

    def batch_bytes(self, b: int) -> bytes:
        return self.x[b].astype("<f4").tobytes() + self.y[b].astype("<i4").tobytes()


def softmax_loss_and_grad(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of softmax(x W + b) and its gradient, as TF.js would compute it."""
    kernel, bias = weights
    logits = x @ kernel + bias
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    onehot = np.eye(kernel.shape[1], dtype=np.float32)[y]
    loss = float(-np.mean(np.sum(onehot * np.log(np.clip(probs, 1e-7, 1)), axis=1)))
    delta = (probs - onehot) / len(y)
    return loss, [(x.T @ delta).astype(np.float32), delta.sum(axis=0).astype(np.float32)]


def job_body(ds: Dataset, **overrides: Any) -> dict[str, Any]:
    features, classes = ds.x.shape[2], int(ds.y.max()) + 1
    body = {
        "name": "softmax test",
        "model": {
            "modelTopology": softmax_topology(features, classes),
            "weightsManifest": [
                {
                    "paths": ["weights.bin"],
                    "weights": [
                        {"name": "dense/kernel", "shape": [features, classes], "dtype": "float32"},
                        {"name": "dense/bias", "shape": [classes], "dtype": "float32"},
                    ],
                }
            ],
        },
        "loss": "sparseCategoricalCrossentropy",
        "dataset": {
            "batches": ds.x.shape[0],
            "x": {"shape": [ds.x.shape[1], features], "dtype": "float32"},
            "y": {"shape": [ds.x.shape[1]], "dtype": "int32"},
        },
        "optimizer": {"name": "sgd", "learning_rate": 0.5},
        "gradients_per_update": 1,
        "staleness": 4,
        "epochs": 1,
        "lease_seconds": 60,
        "codec": "fp32",
    }
    body.update(overrides)
    return body


def direct_job(job_id: str, batches: int, **options: Any) -> tuple[Any, Any]:
    """(META, spec) of a running job of `batches` batches, its records and queue made directly,
    nothing queued yet (no uploads: leases never read them; a test with a huge epoch queues it itself)."""
    x = {"shape": [4, 4], "dtype": "float32"}
    body = job_body(
        Dataset.generate(batches=1, batch_size=4),
        dataset={"batches": batches, "x": x, "y": {"shape": [4], "dtype": "int32"}},
        **options,
    )
    spec = parse_job(body, 10**6, 10**6)
    parts = services_module.services()
    meta = parts.jobs.create(job_id, spec)
    parts.tasks.open(job_id)
    return parts.meta.save(meta, replace(meta, status="running")), spec


# How old a running-jobs list or META read a lease may use (chalicelib/domain/config.py's default).
LEASE_META_MAX_AGE = 1.0
APP_SETTINGS = (
    "TABLE_NAME",
    "BUCKET_NAME",
    "TASK_QUEUE_URL",
    "RESULTS_QUEUE_URL",
    "PUBLISH_QUEUE_URL",
    "TASK_DLQ_URL",
    "RESULTS_DLQ_URL",
    "LEASE_SECRET_ID",
    "PUBLIC_BASE_URL",
    "ADMIN_TOKEN",
    "LEASE_WAIT_SECONDS",
)
# Calls that must present the volunteer token of the identity that took the lease.
HOLDER_CALLS = ("/tasks/heartbeat", "/tasks/complete", "/tasks/release")


def stage_project(directory: Path) -> Path:
    """A Chalice project folder whose `test` stage points at the moto resources,
    the way a deployed stage's environment points at the real ones."""
    env = {key: os.environ[key] for key in APP_SETTINGS if key in os.environ}
    (directory / ".chalice").mkdir(parents=True, exist_ok=True)
    config = {"version": "2.0", "app_name": "crowdtrain", "stages": {"test": {"environment_variables": env}}}
    (directory / ".chalice" / "config.json").write_text(json.dumps(config))
    return directory


class Harness:
    def __init__(self):
        services_module.reset()
        self._project = tempfile.TemporaryDirectory()
        project = stage_project(Path(self._project.name))
        self._client_cm = Client(app_module.app, stage_name="test", project_dir=str(project))
        self.session = boto3.Session(region_name="us-east-1")
        self.sqs = self.session.client("sqs")
        self.s3 = self.session.client("s3")
        self.secretsmanager = self.session.client("secretsmanager")
        self.results_url = self.sqs.get_queue_url(QueueName="crowdtrain-test-results.fifo")["QueueUrl"]
        self.tasks_url = self.sqs.get_queue_url(QueueName="crowdtrain-test-tasks")["QueueUrl"]
        self.task_dlq_url = self.sqs.get_queue_url(QueueName="crowdtrain-test-tasks-dead")["QueueUrl"]
        self.result_dlq_url = self.sqs.get_queue_url(QueueName="crowdtrain-test-results-dead.fifo")["QueueUrl"]
        self._models: dict[str, list[np.ndarray]] = {}  # versions are immutable, as the page caches them
        self.identities: dict[str, dict[str, str]] = {}  # volunteer name -> its issued identity
        self._holders: dict[str, str] = {}  # lease token -> the volunteer token of the identity that took it

    def __enter__(self) -> "Harness":
        self.client = self._client_cm.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._client_cm.__exit__(*exc)
        self._project.cleanup()
        services_module.reset()

    @staticmethod
    def create_resources(session: boto3.Session) -> dict[str, str]:
        """The stateful resources the app needs, as infra/ defines them, in moto."""
        ddb = session.client("dynamodb")
        ddb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        )
        session.client("s3").create_bucket(Bucket=BUCKET)
        sqs = session.client("sqs")
        arn = lambda url: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[  # noqa: E731
            "Attributes"
        ]["QueueArn"]
        task_dlq = sqs.create_queue(QueueName="crowdtrain-test-tasks-dead")["QueueUrl"]
        result_dlq = sqs.create_queue(QueueName="crowdtrain-test-results-dead.fifo", Attributes={"FifoQueue": "true"})[
            "QueueUrl"
        ]
        # as infra/template.yaml has them, with a low task receive limit so tests see dead ends quickly
        tasks = sqs.create_queue(
            QueueName="crowdtrain-test-tasks",
            Attributes={
                "VisibilityTimeout": "30",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": arn(task_dlq), "maxReceiveCount": str(TASK_MAX_RECEIVES)}
                ),
            },
        )["QueueUrl"]
        results = sqs.create_queue(
            QueueName="crowdtrain-test-results.fifo",
            Attributes={
                "FifoQueue": "true",
                "VisibilityTimeout": "60",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn(result_dlq), "maxReceiveCount": "5"}),
            },
        )["QueueUrl"]
        publish = sqs.create_queue(QueueName="crowdtrain-test-publish")["QueueUrl"]
        secret = session.client("secretsmanager").create_secret(
            Name="crowdtrain-test-lease", SecretString="0123456789abcdef0123456789abcdef"
        )["ARN"]
        return {
            "TABLE_NAME": TABLE,
            "BUCKET_NAME": BUCKET,
            "TASK_QUEUE_URL": tasks,
            "RESULTS_QUEUE_URL": results,
            "PUBLISH_QUEUE_URL": publish,
            "TASK_DLQ_URL": task_dlq,
            "RESULTS_DLQ_URL": result_dlq,
            "LEASE_SECRET_ID": secret,
            "PUBLIC_BASE_URL": PUBLIC,
        }

    # -- API ---------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None, headers: dict | None = None):
        """An HTTP call to the app. A volunteer's client sends its volunteer token with each call
        about a lease: added here for a lease this harness took, unless the body has one."""
        if path in HOLDER_CALLS and isinstance(body, dict) and "volunteer_token" not in body:
            holder = self._holder(body.get("lease_token"))
            if holder:
                body = {**body, "volunteer_token": holder}
        payload = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
        response = getattr(self.client.http, method.lower())(path, headers=headers or JSON, body=payload)
        if path in HOLDER_CALLS and isinstance(body, dict) and response.status_code == 200:
            renewed = json.loads(response.body).get("lease_token")
            if renewed and body.get("lease_token") in self._holders:
                self._holders[renewed] = self._holders[body["lease_token"]]
        return response

    def _holder(self, lease_token: Any) -> str | None:
        """The volunteer token of the identity a lease token names (one this harness issued)."""
        if lease_token in self._holders:
            return self._holders[lease_token]
        try:
            named = token_payload({"lease_token": lease_token})["volunteer_id"]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError, RecursionError):
            return None  # not a lease token this harness can read (the bad-input suite's)
        return next((i["volunteer_token"] for i in self.identities.values() if i["volunteer_id"] == named), None)

    def identity(self, volunteer: str) -> dict[str, str]:
        """The identity the app issued for this volunteer name (issued on first use)."""
        if volunteer not in self.identities:
            reply = self.call("POST", "/volunteers", {"name": volunteer})
            assert reply.status_code == 201, reply.body
            self.identities[volunteer] = json.loads(reply.body)
        return self.identities[volunteer]

    def volunteer_id(self, volunteer: str) -> str:
        return self.identity(volunteer)["volunteer_id"]

    def lease_reply(self, volunteer: str = "v"):
        """POST /tasks/lease as this volunteer; the raw reply."""
        token = self.identity(volunteer)["volunteer_token"]
        reply = self.call("POST", "/tasks/lease", {"volunteer_token": token})
        if reply.status_code == 200 and "lease_token" in json.loads(reply.body):  # not a synchronous round's wait
            self._holders[json.loads(reply.body)["lease_token"]] = token
        return reply

    def admin(self, method: str, path: str, body: Any = None):
        return self.call(method, path, body, ADMIN)

    def create_job(
        self,
        ds: Dataset,
        initial: list[np.ndarray] | None = None,
        start: bool = True,
        encoding: str = "identity",
        files: list[bytes] | None = None,
        **overrides: Any,
    ) -> str:
        """Create, upload (gzip-compressing batch files for encoding="gzip", or
        uploading `files` as they are) and start."""
        body = job_body(ds, **overrides)
        body["dataset"]["encoding"] = encoding
        reply = self.admin("POST", "/jobs", body)
        assert reply.status_code == 201, reply.body
        created = json.loads(reply.body)
        job = created["job_id"]
        features, classes = ds.x.shape[2], int(ds.y.max()) + 1
        if initial is None:
            rng = np.random.default_rng(1)
            initial = [
                rng.normal(scale=0.1, size=(features, classes)).astype(np.float32),
                np.zeros(classes, np.float32),
            ]
        weights = b"".join(w.astype("<f4").tobytes() for w in initial)
        assert post_form(created["upload"]["weights"], weights, check=False).status_code in (200, 204)
        prefix = created["upload"]["batch_key_prefix"]
        if files is None:
            files = [ds.batch_bytes(b) for b in range(ds.x.shape[0])]
            files = [gzip.compress(data) for data in files] if encoding == "gzip" else files
        for b, data in enumerate(files):
            res = post_form(created["upload"]["batches"], data, key=f"{prefix}batch-{b:06d}.bin", check=False)
            assert res.status_code in (200, 204), res.text
        if start:
            reply = self.admin("POST", f"/jobs/{job}/start")
            assert reply.status_code == 200, reply.body
        return job

    def folds(self, job: str) -> list[tuple[int, int, int]]:
        """(epoch, batch, version) of every folded batch, from the fold log and META."""
        parts = services_module.services()
        return parts.fold_log.folds(parts.meta.get(job))

    def job_queue(self, job: str) -> str:
        """The job's own task queue (store/queues.py)."""
        return f"{self.tasks_url}-{job}"

    def waiting(self, url: str) -> int:
        """Messages waiting in a queue (moto counts exactly)."""
        return int(
            self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]
        )

    def status(self, job: str) -> dict[str, Any]:
        reply = self.admin("GET", f"/jobs/{job}")
        assert reply.status_code == 200, reply.body
        return json.loads(reply.body)

    # -- volunteer steps ---------------------------------------------------------
    def lease(self, volunteer: str = "v") -> dict[str, Any] | None:
        reply = self.lease_reply(volunteer)
        if reply.status_code == 204:
            return None
        assert reply.status_code == 200, reply.body
        return json.loads(reply.body)

    def fetch(self, url: str) -> bytes:
        """GET a public URL. Public URLs are CloudFront's in AWS, which reads the
        private bucket through origin access control; here S3 is read directly."""
        assert url.startswith(PUBLIC), url
        obj = self.s3.get_object(Bucket=BUCKET, Key=url[len(PUBLIC) :])
        body = obj["Body"].read()  # a browser's fetch inflates what was stored gzip-encoded
        return gzip.decompress(body) if obj.get("ContentEncoding") == "gzip" else body

    def load_model(self, model_url: str) -> list[np.ndarray]:
        """Weights of a model.json URL, read as tf.loadLayersModel would (shard paths relative to it)."""
        if model_url not in self._models:
            self._models[model_url] = self._read_model(model_url)
        return self._models[model_url]

    def _read_model(self, model_url: str) -> list[np.ndarray]:
        model = json.loads(self.fetch(model_url))
        base = model_url.rsplit("/", 1)[0] + "/"
        group = model["weightsManifest"][0]
        shard = b"".join(self.fetch(base + path) for path in group["paths"])
        out, offset = [], 0
        for spec in group["weights"]:
            n = int(np.prod(spec["shape"]))
            out.append(np.frombuffer(shard, "<f4", count=n, offset=offset).reshape(spec["shape"]))
            offset += 4 * n
        return out

    def weights(self, job: str, version: int) -> list[np.ndarray]:
        return self.load_model(f"{PUBLIC}jobs/{job}/versions/{version:08d}/model.json")

    def compute(self, task: dict[str, Any]) -> tuple[float, bytes]:
        """What a volunteer computes: the gradient of its batch at the base version, encoded."""
        spec = task["spec"]
        weights = self.load_model(task["model_url"])
        raw = self.fetch(task["batch_url"])
        bsz, feats = spec["dataset"]["x"]["shape"]
        x = np.frombuffer(raw, "<f4", count=bsz * feats).reshape(bsz, feats)
        y = np.frombuffer(raw, "<i4", offset=4 * bsz * feats)
        loss, grads = softmax_loss_and_grad(weights, x, y)
        return loss, get_codec(spec["codec"]).encode(grads)

    def upload(self, task: dict[str, Any], data: bytes) -> requests.Response:
        return post_form(task["upload"], data, check=False)

    def complete(self, task: dict[str, Any], loss: float = 1.0, token: str | None = None, steps: int | None = None):
        body = {"job_id": task["job_id"], "loss": loss, "lease_token": token or task["lease_token"]}
        return self.call("POST", "/tasks/complete", body if steps is None else {**body, "steps": steps})

    def work(self, task: dict[str, Any]):
        loss, data = self.compute(task)
        assert self.upload(task, data).status_code in (200, 204)
        return self.complete(task, loss)

    # -- fold ---------------------------------------------------------------------
    def result_messages(self, max_messages: int = 10, visibility: int = 60) -> list[dict[str, Any]]:
        reply = self.sqs.receive_message(
            QueueUrl=self.results_url, MaxNumberOfMessages=max_messages, VisibilityTimeout=visibility
        )
        return reply.get("Messages", [])

    def invoke_fold(self, bodies: list[str]):
        event = self.client.events.generate_sqs_event(message_bodies=bodies, queue_name="crowdtrain-test-results.fifo")
        return self.client.lambda_.invoke("fold", event)

    def deliver(self) -> int:
        """Run the fold over everything in the results queue; returns the messages
        folded (results and partial sums: the credit tallies they ask for run too,
        uncounted)."""
        done = 0
        while True:
            messages = self.result_messages()
            if not messages:
                return done
            self.invoke_fold([m["Body"] for m in messages])
            for m in messages:
                self.sqs.delete_message(QueueUrl=self.results_url, ReceiptHandle=m["ReceiptHandle"])
            done += sum(not isinstance(fold_message(m["Body"]), CreditDue) for m in messages)


def lease_items(table: Any, job: str) -> list[dict[str, Any]]:
    """Every lease record of a job, from each of its lease shards (a boto3 Table)."""
    return [
        item
        for pk in job_partitions(job, "L")
        for item in table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": pk})["Items"]
    ]
