"""crowdtrain's API and event handlers: routes only; the work is in chalicelib."""

import os

from chalice import Chalice, CORSConfig, IAMAuthorizer, Rate, Response
from chalice.app import Request

from chalicelib.domain import validate
from chalicelib.domain.addresses import network
from chalicelib.domain.errors import NotFound, PayloadTooLarge
from chalicelib.domain.keys import INDEX_KEY, status_key
from chalicelib.domain.records import CreditDue, fold_message
from chalicelib.domain.wire import Completion, CreditRequest, HeldLease, Registration, Release, TokenRequest
from chalicelib.domain.wire import job_id as _job_id
from chalicelib.services import services
from chalicelib.store.due import due_jobs
from chalicelib.tasks.handout import RETRY_AFTER_SECONDS

app = Chalice(app_name="crowdtrain")
iam = IAMAuthorizer()
# Retry-After is exposed so that a page on another origin can read it (CORS hides other headers).
cors = CORSConfig(allow_origin=os.environ.get("CORS_ORIGIN", "*"), max_age=600, expose_headers=["Retry-After"])

MAX_ADMIN_BODY = 1024 * 1024
MAX_TASK_BODY = 16 * 1024


def _request() -> Request:
    """The request being handled: chalice sets it before it calls a route."""
    request = app.current_request
    assert request is not None, "no request is being handled"  # only routes call this
    return request


def _body(limit: int) -> dict:
    """The request's JSON object; 413 past `limit` bytes, 400 if not an object."""
    request = _request()
    if len(request.raw_body or b"") > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return validate.body_object(validate.json_document(request.raw_body or b""))


def _admin() -> None:
    request = _request()
    services().guard.check(request.context, request.headers)


def _source_address() -> str:
    """The caller's network as API Gateway saw it (the local stack: as its server saw it): an IPv6
    client's /64, which per-address limits and checks count as one address (domain/addresses.py)."""
    identity = (_request().context or {}).get("identity") or {}
    return network(str(identity.get("sourceIp") or "unknown"))


# -- admin (IAM in AWS) -------------------------------------------------------
@app.route("/jobs", methods=["POST"], authorizer=iam)
def create_job():
    _admin()
    return Response(body=services().admin.create(_body(MAX_ADMIN_BODY)), status_code=201)


@app.route("/jobs", methods=["GET"], authorizer=iam)
def list_jobs():
    _admin()
    return {"jobs": services().admin.list()}


@app.route("/jobs/{job_id}", methods=["GET"], authorizer=iam)
def job_status(job_id):
    _admin()
    return services().admin.status(_job_id(job_id))


@app.route("/jobs/{job_id}/start", methods=["POST"], authorizer=iam)
def start_job(job_id):
    _admin()
    return services().admin.start(_job_id(job_id))


@app.route("/jobs/{job_id}/pause", methods=["POST"], authorizer=iam)
def pause_job(job_id):
    _admin()
    return services().admin.set_paused(_job_id(job_id), True)


@app.route("/jobs/{job_id}/resume", methods=["POST"], authorizer=iam)
def resume_job(job_id):
    _admin()
    return services().admin.set_paused(_job_id(job_id), False)


@app.route("/jobs/{job_id}/redrive", methods=["POST"], authorizer=iam)
def redrive_job(job_id):
    """The job's dead letters back to their queues, now (or quarantined, when redriven too often)."""
    _admin()
    done = services().redrive.redrive(_job_id(job_id))
    return {"job_id": job_id, "redriven": done.moved, "quarantined": done.quarantined}


@app.route("/jobs/{job_id}/quarantine", methods=["GET"], authorizer=iam)
def quarantined(job_id):
    """The job's messages the redrive gave up on, and why."""
    _admin()
    return {"job_id": _job_id(job_id), "quarantined": [q.public() for q in services().quarantine.all(job_id)]}


@app.route("/jobs/{job_id}/quarantine", methods=["POST"], authorizer=iam)
def retry_quarantined(job_id):
    """Every quarantined message of the job back to its queue, its redrives counted afresh."""
    _admin()
    return {"job_id": _job_id(job_id), "retried": [q.public() for q in services().redrive.retry_quarantined(job_id)]}


@app.route("/jobs/{job_id}", methods=["DELETE"], authorizer=iam)
def delete_job(job_id):
    """One bounded step of deleting a job: 200 when it is gone, 202 (and its progress) when more is left."""
    _admin()
    step = services().admin.delete(_job_id(job_id))
    return Response(step, status_code=200 if step["deleted"] else 202)


@app.route("/jobs/{job_id}/credit", methods=["GET"], authorizer=iam)
def job_credit(job_id):
    _admin()
    return services().credit.ledger(_job_id(job_id))


# -- volunteers and dashboards (public, throttled at API Gateway) --------------
@app.route("/progress", methods=["GET"], cors=cors)
def list_progress():
    """Jobs that have started: the published job list (pages read it from CloudFront)."""
    try:
        return services().board.read(INDEX_KEY)
    except NotFound:
        return {"jobs": []}


@app.route("/progress/{job_id}", methods=["GET"], cors=cors)
def job_progress(job_id):
    """A started job's published status document; no database read."""
    try:
        return services().board.read(status_key(_job_id(job_id)))
    except NotFound:
        raise NotFound(f"no started job {job_id}")


@app.route("/volunteers", methods=["POST"], cors=cors)
def register_volunteer():
    """A volunteer identity (its token goes with every task call), a limited number per address and hour."""
    registration = Registration.parse(_body(MAX_TASK_BODY))
    return Response(body=services().identities.issue(_source_address(), registration.name).json(), status_code=201)


@app.route("/volunteers/renew", methods=["POST"], cors=cors)
def renew_volunteer():
    """A fresh token for this identity (same id, same credit), valid 30 days from now."""
    return services().identities.renew(TokenRequest.parse(_body(MAX_TASK_BODY)).volunteer_token).json()


@app.route("/volunteers/credit", methods=["POST"], cors=cors)
def volunteer_credit():
    """The credit this volunteer's identity earned in a job (its token proves which identity it is)."""
    request = CreditRequest.parse(_body(MAX_TASK_BODY))
    return services().credit.volunteer(request.job_id, request.volunteer_token)


@app.route("/tasks/lease", methods=["POST"], cors=cors)
def lease_task():
    answer = services().handout.lease(TokenRequest.parse(_body(MAX_TASK_BODY)), _source_address())
    if answer is None:
        return Response(body="", status_code=204, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return answer.json()


@app.route("/tasks/heartbeat", methods=["POST"], cors=cors)
def heartbeat_task():
    return services().heartbeats.heartbeat(HeldLease.parse(_body(MAX_TASK_BODY))).json()


@app.route("/tasks/complete", methods=["POST"], cors=cors)
def complete_task():
    return services().completions.complete(Completion.parse(_body(MAX_TASK_BODY))).json()


@app.route("/tasks/release", methods=["POST"], cors=cors)
def release_task():
    return services().releases.release(Release.parse(_body(MAX_TASK_BODY)), _source_address()).json()


# -- fold (results FIFO queue) ------------------------------------------------
@app.on_sqs_message(queue=os.environ.get("RESULTS_QUEUE_NAME", "crowdtrain-dev-results.fifo"), batch_size=10)
def fold(event):
    """Fold completed tasks, the whole batch at once, and tally credit where a
    job asked (its own message group); an exception makes SQS redeliver the batch."""
    messages = [fold_message(record.body) for record in event]
    services().credit_tally.handle([m for m in messages if isinstance(m, CreditDue)])
    services().fold.handle_batch([m for m in messages if not isinstance(m, CreditDue)])


# -- status documents due later (a standard queue, each message delayed) ---------
@app.on_sqs_message(queue=os.environ.get("PUBLISH_QUEUE_NAME", "crowdtrain-dev-publish"), batch_size=10)
def publish_status(event):
    """Write the status documents a fold skipped (one was written seconds before), now that they are due."""
    services().board.publish_due(due_jobs([record.body for record in event]))


@app.schedule(Rate(5, unit=Rate.MINUTES))
def redrive_dead_letters(event):
    """Every few minutes, every dead letter back to its queue: none is lost there."""
    services().redrive.redrive()
