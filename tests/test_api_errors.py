"""Client mistakes get a JSON 4xx that names the problem, never a 5xx, and change nothing."""
import json

import pytest

from chalicelib.auth import AdminGuard
from chalicelib.errors import Unauthorized
from tests.harness import ADMIN, JSON, Dataset, job_body


def error(reply):
    body = json.loads(reply.body)
    assert set(body) == {"Code", "Message"}, body
    return body["Message"]


@pytest.mark.parametrize("method,path", [
    ("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/jobs/j-1"), ("POST", "/jobs/j-1/start"),
    ("POST", "/jobs/j-1/pause"), ("POST", "/jobs/j-1/resume"), ("DELETE", "/jobs/j-1"),
])
@pytest.mark.parametrize("headers", [JSON, {**JSON, "Authorization": "Bearer wrong"},
                                     {**JSON, "Authorization": "test-admin-token"}],
                         ids=["none", "wrong-token", "not-bearer"])
def test_admin_routes_reject_unauthenticated_calls(harness, method, path, headers):
    reply = harness.call(method, path, {} if method == "POST" else None, headers)
    assert reply.status_code == 401
    assert "IAM" in error(reply)


def test_admin_guard_accepts_api_gateway_verified_iam_identity():
    guard = AdminGuard("")
    arn = "arn:aws:iam::123456789012:user/operator"
    assert guard.check({"identity": {"userArn": arn}}, {}) == arn
    with pytest.raises(Unauthorized):
        guard.check({"identity": {"sourceIp": "1.2.3.4"}}, {"authorization": "Bearer "})  # no token configured


def test_malformed_json_is_a_400(harness):
    for path, headers in [("/jobs", ADMIN), ("/tasks/lease", JSON), ("/tasks/complete", JSON)]:
        reply = harness.call("POST", path, "{not json", headers)
        assert reply.status_code == 400, path
        reply = harness.call("POST", path, "[1, 2]", headers)
        assert reply.status_code == 400 and "JSON object" in error(reply), path


def test_oversized_bodies_are_refused(harness):
    reply = harness.call("POST", "/tasks/complete", {"lease_token": "x" * 20000})
    assert reply.status_code == 413
    reply = harness.admin("POST", "/jobs", {"name": "x" * (1024 * 1024 + 1)})
    assert reply.status_code == 413


BAD_JOBS = [
    ({"model": None}, "model.json object"),
    ({"model": {"modelTopology": {"class_name": "Sequential"}}}, "weightsManifest"),
    ({"model": {"modelTopology": [], "weightsManifest": []}}, "modelTopology"),
    ({"loss": "hinge"}, "loss must be one of"),
    ({"dataset": {"batches": 0, "x": {"shape": [2, 4], "dtype": "float32"}, "y": {"shape": [2], "dtype": "int32"}}},
     "'batches' must be between"),
    ({"dataset": {"batches": 2, "x": {"shape": [2, 4], "dtype": "float64"}, "y": {"shape": [2], "dtype": "int32"}}},
     "dtype must be one of"),
    ({"dataset": {"batches": 2, "x": {"shape": [3, 4], "dtype": "float32"}, "y": {"shape": [2], "dtype": "int32"}}},
     "same batch size"),
    ({"dataset": {"batches": 2, "x": {"shape": [2, -4], "dtype": "float32"}, "y": {"shape": [2], "dtype": "int32"}}},
     "positive integers"),
    ({"optimizer": {"name": "adagrad"}}, "unknown optimizer"),
    ({"optimizer": {"name": "sgd", "learning_rate": "fast"}}, "finite number"),
    ({"codec": "zip"}, "unknown gradient codec"),
    ({"aggregation": "vote"}, "unknown aggregation"),
    ({"gradients_per_update": 0}, "'gradients_per_update' must be between"),
    ({"gradients_per_update": 65}, "'gradients_per_update' must be between"),
    ({"staleness": -1}, "'staleness' must be between"),
    ({"epochs": "many"}, "'epochs' must be an integer"),
    ({"lease_seconds": 1}, "'lease_seconds' must be between"),
    ({"max_grad_norm": float("inf")}, "finite number"),
    ({"name": "tab\there"}, "printable"),
    ({"surprise": 1}, "unknown job fields"),
]


@pytest.mark.parametrize("override,message", BAD_JOBS, ids=[m for _, m in BAD_JOBS])
def test_bad_job_specs_are_400s_naming_the_problem(harness, override, message):
    body = job_body(Dataset.generate(batches=2, batch_size=2), **override)
    reply = harness.call("POST", "/jobs", json.dumps(body, allow_nan=True), ADMIN)
    assert reply.status_code == 400, reply.body
    assert message in error(reply)
    assert json.loads(harness.admin("GET", "/jobs").body)["jobs"] == []


def test_weight_manifest_checks(harness):
    body = job_body(Dataset.generate(batches=2, batch_size=2))
    weights = body["model"]["weightsManifest"][0]["weights"]
    for change, message in [
        ({"dtype": "int32"}, "only float32"),
        ({"shape": [0, 3]}, "positive integers"),
        ({"name": ""}, "name of 1-256"),
        ({"quantization": {"dtype": "uint8"}}, "quantized"),
    ]:
        entry = dict(weights[0], **change)
        doc = {**body, "model": {**body["model"], "weightsManifest": [{"paths": [], "weights": [entry, weights[1]]}]}}
        reply = harness.admin("POST", "/jobs", doc)
        assert reply.status_code == 400 and message in error(reply), change
    twice = {**body, "model": {**body["model"], "weightsManifest": [{"paths": [], "weights": [weights[0]] * 2}]}}
    assert "appears twice" in error(harness.admin("POST", "/jobs", twice))


@pytest.mark.parametrize("job_id,status", [("..%2F..%2Fetc", 400), ("J-UPPER", 400), ("j-" + "a" * 80, 400),
                                           ("j-000000000000", 404)])
def test_bad_and_unknown_job_ids(harness, job_id, status):
    assert harness.admin("GET", f"/jobs/{job_id}").status_code == status
    assert harness.call("POST", "/tasks/complete",
                        {"job_id": job_id, "lease_token": "v1.e30.AA", "loss": 1}).status_code in (400, 401, 403)


def test_task_route_field_checks(harness):
    cases = [
        ({"volunteer_id": 7}, "/tasks/lease", "volunteer_id"),
        ({"volunteer_id": "x", "extra": 1}, "/tasks/lease", "unknown request fields"),
        ({"job_id": "j-1", "lease_token": "t"}, "/tasks/complete", "'loss' is required"),
        ({"job_id": "j-1", "lease_token": "t", "loss": float("nan")}, "/tasks/complete", "finite"),
        ({"job_id": "j-1", "lease_token": "t", "loss": -1}, "/tasks/complete", "between"),
        ({"lease_token": "t", "loss": 1}, "/tasks/complete", "job id"),
    ]
    for body, path, message in cases:
        reply = harness.call("POST", path, json.dumps(body, allow_nan=True))
        assert reply.status_code == 400 and message in error(reply), (body, reply.body)


def test_starting_twice_and_pausing_unstarted_jobs_conflict(harness):
    job = harness.create_job(Dataset.generate(batches=2, batch_size=2), start=False)
    assert harness.admin("POST", f"/jobs/{job}/pause").status_code == 409
    assert harness.admin("POST", f"/jobs/{job}/resume").status_code == 409
    assert harness.admin("POST", f"/jobs/{job}/start").status_code == 200
    reply = harness.admin("POST", f"/jobs/{job}/start")
    assert reply.status_code == 409 and "already running" in error(reply)
