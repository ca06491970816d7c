"""Settings read from the environment, which .chalice/config.json (AWS) or the
local stack sets. Read once per process, when first needed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Settings:
    table_name: str
    bucket_name: str
    task_queue_url: str
    results_queue_url: str
    publish_queue_url: str  # status documents due later (store/due.py); none: a skipped one waits for the next fold
    # Their dead-letter queues, which the redrive empties back into them.
    task_dlq_url: str
    results_dlq_url: str
    # Where browsers read weights and batches: the CloudFront URL in AWS, the
    # bucket's URL on the local stack. Keys are appended to it.
    public_base_url: str
    # The HMAC key for lease tokens lives in Secrets Manager (name or ARN) ...
    lease_secret_id: str
    # ... or, where there is no Secrets Manager, directly in the environment.
    lease_secret: str
    # A bearer token that admits admin calls where no API Gateway IAM
    # authorizer stands in front of the app (the local stack). Empty: IAM only.
    admin_token: str
    lease_wait_seconds: int
    # Leases one volunteer identity may hold at once.
    max_leases_per_volunteer: int
    # Leases all volunteers behind one source address may hold at once, and
    # volunteer identities one address may be issued per hour: what one
    # client gains by minting identities (the local stack, where every
    # volunteer is 127.0.0.1, sets both high).
    max_leases_per_address: int
    volunteers_per_address_per_hour: int
    # Whether source addresses tell clients apart: a replica check must then
    # come from another address than its first copy, and one address's share
    # of an update is capped like one identity's (off where every volunteer
    # shares one address: the local stack).
    distinct_addresses: bool
    # Tasks one identity, and all identities behind one address, may hand
    # back (POST /tasks/release) per RELEASE_WINDOW_SECONDS: a page releases
    # only when it cannot compute or is stopped, while a client cycling lease
    # -> release could pick the task it wants.
    releases_per_volunteer: int
    releases_per_address: int
    release_window_seconds: int
    # How old a META read one Lambda may reuse for a lease (the version it
    # hands out, whether the job runs): leases then read META once a second
    # per job and Lambda instead of once each.
    lease_meta_max_age: float
    # How often a job's credit is tallied (fold/credit.py): one identity's
    # credit item is written at most once per tally, however many of its
    # results were folded meanwhile. 0: after every version (tests).
    credit_tally_seconds: int
    # fold_groups for a job that names none and can be folded in parts: what
    # `crowdtrain deploy --volunteers N` sized the stage for (infra/crowdtrain/aws/sizing.py).
    default_fold_groups: int
    max_parameters: int
    max_batches: int
    # The fold Lambda's memory (lambda_memory_size in .chalice/config.json):
    # jobs whose fold would not fit are refused at creation.
    fold_memory_mb: int


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@lru_cache(maxsize=1)
def settings() -> Settings:
    env = os.environ
    bucket = env.get("BUCKET_NAME", "crowdtrain-dev-data")
    return Settings(
        table_name=env.get("TABLE_NAME", "crowdtrain-dev"),
        bucket_name=bucket,
        task_queue_url=env.get("TASK_QUEUE_URL", ""),
        results_queue_url=env.get("RESULTS_QUEUE_URL", ""),
        publish_queue_url=env.get("PUBLISH_QUEUE_URL", ""),
        task_dlq_url=env.get("TASK_DLQ_URL", ""),
        results_dlq_url=env.get("RESULTS_DLQ_URL", ""),
        public_base_url=env.get("PUBLIC_BASE_URL", f"https://{bucket}.s3.amazonaws.com/").rstrip("/") + "/",
        lease_secret_id=env.get("LEASE_SECRET_ID", ""),
        lease_secret=env.get("LEASE_SECRET", ""),
        admin_token=env.get("ADMIN_TOKEN", ""),
        lease_wait_seconds=_int("LEASE_WAIT_SECONDS", 1),
        max_leases_per_volunteer=_int("MAX_LEASES_PER_VOLUNTEER", 4),
        max_leases_per_address=_int("MAX_LEASES_PER_ADDRESS", 16),
        volunteers_per_address_per_hour=_int("VOLUNTEERS_PER_ADDRESS_PER_HOUR", 20),
        distinct_addresses=_int("DISTINCT_ADDRESSES", 1) != 0,
        releases_per_volunteer=_int("RELEASES_PER_VOLUNTEER", 30),
        releases_per_address=_int("RELEASES_PER_ADDRESS", 120),
        release_window_seconds=_int("RELEASE_WINDOW_SECONDS", 600),
        lease_meta_max_age=float(env.get("LEASE_META_MAX_AGE", 1.0)),
        credit_tally_seconds=_int("CREDIT_TALLY_SECONDS", 60),
        default_fold_groups=_int("DEFAULT_FOLD_GROUPS", 1),
        max_parameters=_int("MAX_PARAMETERS", 20_000_000),
        max_batches=_int("MAX_BATCHES", 100_000),
        fold_memory_mb=_int("FOLD_MEMORY_MB", 1024),
    )
