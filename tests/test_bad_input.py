"""Every bad input gets a JSON 4xx that names the problem, never a 5xx, and
leaves the job as it was. One named class per kind of mistake or attack;
docs/security.md records the count."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import services
from chalicelib.domain.records import Lease
from tests.harness import ADMIN, JSON, Dataset, job_body, softmax_topology


@dataclass
class Case:
    name: str
    method: str
    path: str  # "{job}" and "{other}" are filled in
    body: Any = None  # dict, raw str, or a callable(ctx) -> body
    status: int = 400
    message: str = ""
    headers: dict = field(default_factory=lambda: dict(JSON))
    prepare: Callable[[dict], None] | None = None


def token_with(ctx, **changes) -> str:
    """The live lease's token with its payload edited and the signature kept."""
    version, key_id, body, mac = ctx["task"]["lease_token"].split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{version}.{key_id}.{edited}.{mac}"


def other_encoding(token: str) -> str:
    """The same token with its MAC's last character changed only in bits no byte uses
    (43 characters carry 258 bits for 32 bytes): it decodes to the same MAC."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]


def expired_token(ctx) -> str:
    """A correctly signed token whose lease ended a second ago."""
    _, _, body, _ = ctx["task"]["lease_token"].split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return services.services().signer.sign(replace(Lease.from_json(payload), expires=time.time() - 1))


def upload(data_of: Callable[[np.ndarray], bytes]) -> Callable[[dict], None]:
    def prepare(ctx):
        ctx["harness"].upload(ctx["fresh"], data_of(np.frombuffer(ctx["gradient"], "<f4").copy()))

    return prepare


def forged_volunteer(ctx):
    """A volunteer token whose payload names another identity (its MAC no longer matches)."""
    version, key_id, _, mac = ctx["harness"].identity("honest")["volunteer_token"].split(".")
    payload = base64.urlsafe_b64encode(json.dumps({"volunteer_id": "admin.000000", "issued": 0}).encode())
    return ".".join([version, key_id, payload.rstrip(b"=").decode(), mac])


def complete(ctx, token_key="fresh", **override):
    return {"job_id": ctx[token_key]["job_id"], "lease_token": ctx[token_key]["lease_token"], "loss": 1.0, **override}


def spec_with(**override):
    return lambda ctx: job_body(ctx["ds"], **override)


def manifest_with(**change):
    def body(ctx):
        doc = job_body(ctx["ds"])
        weights = doc["model"]["weightsManifest"][0]["weights"]
        weights[0] = {**weights[0], **change}
        return doc

    return body


def topology_layer(kind):
    def body(ctx):
        doc = job_body(ctx["ds"])
        topology = softmax_topology(4, 3)
        topology["config"]["layers"].append({"class_name": kind, "config": {"name": "odd"}})
        doc["model"]["modelTopology"] = topology
        return doc

    return body


NO_AUTH = dict(JSON)
CASES = [
    # -- admin authentication
    Case("admin call without credentials", "GET", "/jobs", status=401, message="IAM", headers=NO_AUTH),
    Case(
        "admin call with a wrong bearer token",
        "GET",
        "/jobs/{job}",
        status=401,
        message="IAM",
        headers={**JSON, "Authorization": "Bearer wrong"},
    ),
    Case(
        "admin token not sent as a bearer token",
        "GET",
        "/jobs",
        status=401,
        message="IAM",
        headers={**JSON, "Authorization": "test-admin-token"},
    ),
    Case("unauthenticated delete", "DELETE", "/jobs/{job}", status=401, message="IAM", headers=NO_AUTH),
    Case("unauthenticated pause", "POST", "/jobs/{job}/pause", {}, status=401, message="IAM", headers=NO_AUTH),
    Case("unauthenticated job creation", "POST", "/jobs", spec_with(), status=401, message="IAM", headers=NO_AUTH),
    # -- bodies that are not what JSON routes take
    Case("malformed JSON", "POST", "/tasks/complete", "{not json", message="JSON"),
    Case("JSON array body", "POST", "/tasks/complete", "[1, 2]", message="JSON object"),
    Case("JSON string body", "POST", "/tasks/lease", '"hello"', message="JSON object"),
    Case("empty body", "POST", "/tasks/lease", "", message="JSON"),
    Case(
        "huge task body",
        "POST",
        "/tasks/complete",
        lambda ctx: {"lease_token": "x" * 20_000},
        status=413,
        message="larger than",
    ),
    Case(
        "huge admin body",
        "POST",
        "/jobs",
        lambda ctx: {"name": "x" * (1024 * 1024)},
        status=413,
        message="larger than",
        headers=ADMIN,
    ),
    # -- fields
    Case(
        "missing field",
        "POST",
        "/tasks/complete",
        lambda ctx: {k: v for k, v in complete(ctx).items() if k != "loss"},
        message="'loss' is required",
    ),
    Case(
        "extra field",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, admin=True),
        message="unknown request fields",
    ),
    Case(
        "wrong type: loss as text",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, loss="low"),
        message="finite number",
    ),
    Case(
        "non-finite loss",
        "POST",
        "/tasks/complete",
        lambda ctx: json.dumps(complete(ctx, loss=float("nan"))),
        message="finite",
    ),
    Case("negative loss", "POST", "/tasks/complete", lambda ctx: complete(ctx, loss=-3), message="between"),
    Case(
        "wrong type: token as number",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, lease_token=42),
        message="lease_token",
    ),
    Case("a lease without a volunteer token", "POST", "/tasks/lease", {}, status=401, message="POST /volunteers"),
    Case(
        "a self-chosen volunteer id instead of a token",
        "POST",
        "/tasks/lease",
        {"volunteer_id": "a"},
        message="unknown request fields",
    ),
    Case(
        "wrong type: volunteer token",
        "POST",
        "/tasks/lease",
        {"volunteer_token": ["a"]},
        status=401,
        message="volunteer_token",
    ),
    Case(
        "forged volunteer token",
        "POST",
        "/tasks/lease",
        lambda ctx: {"volunteer_token": forged_volunteer(ctx)},
        status=401,
        message="does not verify",
    ),
    Case(
        "another identity's lease token (a bearer token)",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, volunteer_token=ctx["harness"].identity("thief")["volunteer_token"]),
        status=403,
        message="another volunteer",
    ),
    Case(
        "control characters in a display name", "POST", "/volunteers", {"name": "a\u0000\u0007b"}, message="printable"
    ),
    Case("over-long display name", "POST", "/volunteers", {"name": "v" * 65}, message="1-64"),
    Case(
        "extra field when registering",
        "POST",
        "/volunteers",
        {"name": "a", "volunteer_id": "admin"},
        message="unknown request fields",
    ),
    Case(
        "credit without a volunteer token",
        "POST",
        "/volunteers/credit",
        lambda ctx: {"job_id": ctx["job"]},
        status=401,
        message="POST /volunteers",
    ),
    Case(
        "a forged volunteer token asking for credit",
        "POST",
        "/volunteers/credit",
        lambda ctx: {"job_id": ctx["job"], "volunteer_token": forged_volunteer(ctx)},
        status=401,
        message="does not verify",
    ),
    Case(
        "credit of an unknown job",
        "POST",
        "/volunteers/credit",
        lambda ctx: {
            "job_id": "j-000000000000",
            "volunteer_token": ctx["harness"].identity("thief")["volunteer_token"],
        },
        status=404,
        message="j-000000000000",
    ),
    Case("the credit ledger without admin rights", "GET", "/jobs/{job}/credit", status=401, message="admin"),
    Case("a renewal without a volunteer token", "POST", "/volunteers/renew", {}, status=401, message="volunteer_token"),
    Case(
        "a renewal of a forged volunteer token",
        "POST",
        "/volunteers/renew",
        {"volunteer_token": "v2.k.e30.bWFj"},
        status=401,
        message="volunteer",
    ),
    # -- ids
    Case("unicode in a job id", "GET", "/jobs/j-\u00fcn\u00ef", headers=ADMIN, message="job id"),
    Case("path traversal in a job id (path)", "GET", "/jobs/..%2F..%2Fetc", headers=ADMIN, message="job id"),
    Case(
        "path traversal in a job id (body)",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, job_id="../../jobs/x"),
        message="job id",
    ),
    Case("unknown job", "GET", "/jobs/j-000000000000", headers=ADMIN, status=404, message="no job"),
    # -- lease tokens
    Case(
        "forged token",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, lease_token=token_with(ctx, base_version=99)),
        status=401,
        message="signature",
    ),
    Case(
        "malformed token",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, lease_token="v2.k.%%%.x"),
        status=401,
        message="malformed",
    ),
    Case(
        "token of another job",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, job_id=ctx["other"]),
        status=403,
        message="another job",
    ),
    Case(
        "token whose payload names another job",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, job_id=ctx["other"], lease_token=token_with(ctx, job_id=ctx["other"])),
        status=401,
        message="signature",
    ),
    Case(
        "expired token",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, lease_token=expired_token(ctx)),
        status=410,
        message="expired",
    ),
    Case(
        "replayed completion",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, "done"),
        status=409,
        message="already completed",
    ),
    Case(
        "heartbeat of a completed lease",
        "POST",
        "/tasks/heartbeat",
        lambda ctx: {"job_id": ctx["done"]["job_id"], "lease_token": ctx["done"]["lease_token"]},
        status=409,
        message="already completed",
    ),
    # -- uploads
    Case("completion without an upload", "POST", "/tasks/complete", complete, message="no gradient was uploaded"),
    Case(
        "upload smaller than declared",
        "POST",
        "/tasks/complete",
        complete,
        message="exactly",
        prepare=upload(lambda g: g[:-1].tobytes()),
    ),
    Case(
        "upload larger than declared",
        "POST",
        "/tasks/complete",
        complete,
        message="exactly",
        prepare=upload(lambda g: np.concatenate([g, g]).tobytes()),
    ),
    Case(
        "NaN in the gradient",
        "POST",
        "/tasks/complete",
        complete,
        message="NaN",
        prepare=upload(lambda g: np.where(np.arange(g.size) == 2, np.nan, g).astype("<f4").tobytes()),
    ),
    Case(
        "infinity in the gradient",
        "POST",
        "/tasks/complete",
        complete,
        message="infinite",
        prepare=upload(lambda g: np.where(np.arange(g.size) == 0, np.inf, g).astype("<f4").tobytes()),
    ),
    Case(
        "gradient norm beyond the bound",
        "POST",
        "/tasks/complete",
        complete,
        message="norm",
        prepare=upload(lambda g: (g * 1e7).astype("<f4").tobytes()),
    ),
    # -- job specs
    Case("unknown codec", "POST", "/jobs", spec_with(codec="zip"), headers=ADMIN, message="unknown gradient codec"),
    Case(
        "unknown optimizer",
        "POST",
        "/jobs",
        spec_with(optimizer={"name": "adagrad"}),
        headers=ADMIN,
        message="unknown optimizer",
    ),
    Case(
        "unknown aggregation",
        "POST",
        "/jobs",
        spec_with(aggregation="vote"),
        headers=ADMIN,
        message="unknown aggregation",
    ),
    Case("unknown job field", "POST", "/jobs", spec_with(surprise=1), headers=ADMIN, message="unknown job fields"),
    Case(
        "unsupported layer",
        "POST",
        "/jobs",
        topology_layer("UnitNormalization"),
        headers=ADMIN,
        message="'UnitNormalization' is not supported",
    ),
    Case(
        "unknown layer type", "POST", "/jobs", topology_layer("MyCustomLayer"), headers=ADMIN, message="not supported"
    ),
    Case(
        "unsupported model class",
        "POST",
        "/jobs",
        lambda ctx: {
            **job_body(ctx["ds"]),
            "model": {**job_body(ctx["ds"])["model"], "modelTopology": {"class_name": "Graph", "config": {}}},
        },
        headers=ADMIN,
        message="model class 'Graph' is not supported",
    ),
    Case(
        "quantized weights",
        "POST",
        "/jobs",
        manifest_with(quantization={"dtype": "uint8"}),
        headers=ADMIN,
        message="quantized",
    ),
    Case("integer weights", "POST", "/jobs", manifest_with(dtype="int32"), headers=ADMIN, message="only float32"),
    Case(
        "too many parameters",
        "POST",
        "/jobs",
        manifest_with(shape=[100_000, 1000]),
        headers=ADMIN,
        message="more than the allowed",
    ),
    Case(
        "batch files too large",
        "POST",
        "/jobs",
        spec_with(
            dataset={
                "batches": 2,
                "x": {"shape": [4096, 4096], "dtype": "float32"},
                "y": {"shape": [4096], "dtype": "int32"},
            }
        ),
        headers=ADMIN,
        message="a batch may hold",
    ),
    Case(
        "one-hot of float values",
        "POST",
        "/jobs",
        spec_with(
            dataset={
                "batches": 2,
                "x": {"shape": [4, 3], "dtype": "float32", "one_hot": 8},
                "y": {"shape": [4], "dtype": "int32"},
            }
        ),
        headers=ADMIN,
        message="needs integer token ids",
    ),
    Case(
        "uint8 ids for a vocabulary over 256",
        "POST",
        "/jobs",
        spec_with(
            dataset={
                "batches": 2,
                "x": {"shape": [4, 3], "dtype": "uint8", "one_hot": 300},
                "y": {"shape": [4], "dtype": "int32"},
            }
        ),
        headers=ADMIN,
        message="uint8 token ids stop at 255",
    ),
    Case(
        "batch encoding browsers cannot inflate",
        "POST",
        "/jobs",
        spec_with(
            dataset={
                "batches": 2,
                "encoding": "lz4",
                "x": {"shape": [4, 3], "dtype": "float32"},
                "y": {"shape": [4], "dtype": "int32"},
            }
        ),
        headers=ADMIN,
        message="dataset.encoding must be one of",
    ),
    Case(
        "micro-batch that does not divide the batch",
        "POST",
        "/jobs",
        spec_with(
            dataset={
                "batches": 2,
                "micro_batch": 3,
                "x": {"shape": [4, 3], "dtype": "float32"},
                "y": {"shape": [4], "dtype": "int32"},
            }
        ),
        headers=ADMIN,
        message="must divide the batch size",
    ),
    Case(
        "alphabet that does not match the vocabulary",
        "POST",
        "/jobs",
        spec_with(text={"alphabet": "abc"}),
        headers=ADMIN,
        message="text.alphabet",
    ),
    # -- input that once crashed the parser or the number checks (5xx before)
    Case("JSON nested 3,000 deep", "POST", "/tasks/complete", "[" * 3000 + "]" * 3000, message="nested deeper"),
    Case(
        "admin JSON nested 3,000 deep",
        "POST",
        "/jobs",
        '{"a": ' * 3000 + "1" + "}" * 3000,
        headers=ADMIN,
        message="nested deeper",
    ),
    Case(
        "token payload nested 1,400 deep",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(
            ctx,
            lease_token="v2.k."
            + base64.urlsafe_b64encode(("[" * 1400 + "]" * 1400).encode()).rstrip(b"=").decode()
            + ".AAAA",
        ),
        status=401,
        message="malformed",
    ),
    Case(
        "loss as a 400-digit integer",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, loss=10**400),
        message="'loss' must be between",
    ),
    Case(
        "clip_norm as a 400-digit integer",
        "POST",
        "/jobs",
        spec_with(aggregation={"name": "clipped_mean", "clip_norm": 10**400}),
        headers=ADMIN,
        message="clip_norm",
    ),
    Case(
        "learning rate as a 400-digit integer",
        "POST",
        "/jobs",
        spec_with(optimizer={"name": "sgd", "learning_rate": 10**400}),
        headers=ADMIN,
        message="learning_rate",
    ),
    Case(
        "max_grad_norm as a 400-digit integer",
        "POST",
        "/jobs",
        spec_with(max_grad_norm=10**400),
        headers=ADMIN,
        message="max_grad_norm",
    ),
    Case("job id with a trailing newline", "GET", "/progress/{job}%0A", status=400, message="job id"),
    Case(
        "token MAC with extra padding",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, lease_token=ctx["fresh"]["lease_token"] + "=="),
        status=401,
        message="malformed",
    ),
    Case(
        "token MAC re-encoded in its unused bits",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(ctx, lease_token=other_encoding(ctx["fresh"]["lease_token"])),
        status=401,
        message="malformed",
    ),
    Case(
        "token MAC with a stray character",
        "POST",
        "/tasks/complete",
        lambda ctx: complete(
            ctx, lease_token=ctx["fresh"]["lease_token"][:-2] + "*" + ctx["fresh"]["lease_token"][-2:]
        ),
        status=401,
        message="malformed",
    ),
    # -- state
    Case(
        "starting a running job", "POST", "/jobs/{job}/start", {}, headers=ADMIN, status=409, message="already running"
    ),
    Case(
        "resuming a running job",
        "POST",
        "/jobs/{job}/resume",
        {},
        headers=ADMIN,
        status=409,
        message="only a paused job",
    ),
]


def snapshot(harness, job):
    status = harness.status(job)
    versions = harness.s3.list_objects_v2(Bucket="crowdtrain-test-data", Prefix=f"jobs/{job}/versions/")
    return {
        key: status[key] for key in ("status", "version", "epoch", "batches_done", "pending_gradients", "tasks")
    } | {"history": len(status["history"]), "files": versions.get("KeyCount", 0)}


def fill(value: str, ctx) -> str:
    return value.replace("{job}", ctx["job"]).replace("{other}", ctx["other"])


def test_every_bad_input_is_a_named_4xx_and_changes_nothing(harness, capsys):
    ds = Dataset.generate(batches=6, batch_size=4)
    job, other = harness.create_job(ds), harness.create_job(ds)
    tasks = [harness.lease() for _ in range(4)]
    mine = [t for t in tasks if t["job_id"] == job]
    assert len(mine) >= 2, "both jobs' tasks are interleaved; this seed gives job one at least two"
    done, fresh = mine[0], mine[1]
    assert harness.work(done).status_code == 200
    harness.deliver()
    _, gradient = harness.compute(fresh)
    ctx = {
        "harness": harness,
        "ds": ds,
        "job": job,
        "other": other,
        "done": done,
        "fresh": fresh,
        "task": fresh,
        "gradient": gradient,
    }
    before = snapshot(harness, job)
    failures = []
    for case in CASES:
        if case.prepare:
            case.prepare(ctx)
        body = case.body(ctx) if callable(case.body) else case.body
        reply = harness.call(case.method, fill(case.path, ctx), body, case.headers)
        problem = None
        try:
            payload = json.loads(reply.body)
        except ValueError:
            payload = None
        if reply.status_code != case.status:
            problem = f"status {reply.status_code}, expected {case.status}"
        elif not isinstance(payload, dict) or set(payload) != {"Code", "Message"}:
            problem = f"body is not a JSON error: {reply.body[:200]!r}"
        elif case.message not in payload["Message"]:
            problem = f"message {payload['Message']!r} does not name {case.message!r}"
        elif snapshot(harness, job) != before:
            problem = f"job state changed: {snapshot(harness, job)} != {before}"
        if problem:
            failures.append(f"{case.name}: {problem}")
    with capsys.disabled():
        print(f"\nbad-input suite: {len(CASES)} classes, {len(CASES) - len(failures)} answered as expected")
    assert not failures, "\n".join(failures)
    assert len(CASES) >= 30
    # and after all that, the good upload still completes and folds
    harness.upload(fresh, gradient)
    assert harness.complete(fresh).status_code == 200
    harness.deliver()
    assert harness.status(job)["version"] == before["version"] + 1


def test_admin_guard_accepts_api_gateway_verified_iam_identity():
    import pytest

    from chalicelib.domain.errors import Unauthorized
    from chalicelib.jobs.auth import AdminGuard

    guard = AdminGuard("")
    arn = "arn:aws:iam::123456789012:user/operator"
    assert guard.check({"identity": {"userArn": arn}}, {}) == arn
    with pytest.raises(Unauthorized):
        guard.check({"identity": {"sourceIp": "1.2.3.4"}}, {"authorization": "Bearer "})  # no token configured


# -- property-based fuzzing -------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    [
        "job_id",
        "lease_token",
        "loss",
        "volunteer_id",
        "name",
        "model",
        "dataset",
        "optimizer",
        "codec",
        "epochs",
        "aggregation",
        "text",
    ]
)
BODIES = JSON_VALUES | st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=6)
ROUTES = st.sampled_from(
    [
        ("POST", "/tasks/lease", JSON),
        ("POST", "/tasks/heartbeat", JSON),
        ("POST", "/tasks/complete", JSON),
        ("POST", "/jobs", ADMIN),
        ("GET", "/progress/{id}", JSON),
        ("POST", "/jobs/{id}/pause", ADMIN),
        ("DELETE", "/jobs/{id}", ADMIN),
        ("POST", "/jobs/{id}/start", ADMIN),
        ("POST", "/volunteers/credit", JSON),
        ("POST", "/volunteers/renew", JSON),
        ("GET", "/jobs/{id}/credit", ADMIN),
        ("GET", "/jobs/{id}/quarantine", ADMIN),
        ("POST", "/jobs/{id}/quarantine", ADMIN),
    ]
)
IDS = st.text(min_size=1, max_size=30).map(lambda s: "".join(c for c in s if c not in "/?#%")).filter(bool)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=ROUTES, body=BODIES, job_id=IDS)
def test_fuzzed_requests_never_cause_a_server_error(harness, route, body, job_id):
    method, path, headers = route
    path = path.replace("{id}", job_id)
    reply = harness.call(method, path, json.dumps(body, allow_nan=True), headers)
    assert reply.status_code < 500, (method, path, body, reply.body)
    if reply.status_code >= 400:
        payload = json.loads(reply.body)
        assert set(payload) == {"Code", "Message"} and payload["Message"]
