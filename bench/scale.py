"""Scale model: which AWS limit one job meets first, and at how many volunteers.

The per-task AWS calls are counted through the real handlers on moto (as
bench/cost.py does: ten results per fold invocation, K = 10), DynamoDB's
write units by partition key (a unit per KB of each item written), and the fold's
throughput for one job is measured with AWS-like latency injected (as
bench/fold_throughput.py does), both for a job folded in its one message
group and for one with `fold_groups` = 16 (a multi-level fold,
fold/partials.py). Volunteers then play against AWS's published
quotas, each modelled as a token bucket that refills at the quota's rate and
holds one second of it: 60 simulated seconds in 100 ms ticks, for the paper's
model (about 15 s of compute per task) and for a short step (about 0.5 s).
For each resource it prints the demand as a share of its quota, the share of
requests the bucket would throttle, the first limit hit and the volunteer
count where each limit is reached. docs/scale.md says how a deployment goes
past each one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench import common
from crowdtrain.aws import sizing

VOLUNTEERS = (100, 1_000, 10_000, 100_000)
GROUPS = 16  # fold_groups of the multi-level rows


@dataclass(frozen=True)
class Scenario:
    step: float  # seconds of compute per task
    batches: int = 1  # per task (local steps: one result per `batches` steps)
    fold_groups: int = 1


SCENARIOS = {
    "paper model": Scenario(15.3),
    f"paper model, fold_groups {GROUPS}": Scenario(15.3, fold_groups=GROUPS),
    "short step": Scenario(0.5),
    f"short step, fold_groups {GROUPS}": Scenario(0.5, fold_groups=GROUPS),
    "paper model, 16 local steps": Scenario(16 * 15.3, batches=16),
    # the demo job at `crowdtrain create`'s defaults: 32 local steps of LSTM(128) a task, about 0.3 s each
    # (bench/speedup.py's one volunteer, TF.js wasm in Node here), in a deploy sized for its crowd
    f"demo job, its defaults, fold_groups {GROUPS}": Scenario(32 * 0.3, batches=32, fold_groups=GROUPS),
}
# Request time per task outside the compute (lease, downloads, upload,
# complete), seconds: bench/overhead.py measured 0.2-0.4 s on the local stack.
OVERHEAD_SECONDS = 0.3
PAGE_POLL_SECONDS = 10  # a volunteer page reads its job's status document about this often (3-30 s)
K = 10


@dataclass(frozen=True)
class Quota:
    name: str
    per_second: float
    source: str


QUOTAS = {
    "api": Quota(
        "API Gateway requests, account and region",
        10_000,
        "API Gateway quotas: 10,000 requests/s per account per Region (burst 5,000), raisable",
    ),
    "lambda": Quota(
        "Lambda concurrent executions, account and region",
        1_000,
        "Lambda quotas: 1,000 concurrent executions per Region by default, raisable",
    ),
    "fifo": Quota(
        "SQS FIFO SendMessage for the busiest message group",
        300,
        "SQS quotas: 300 transactions/s per API action per message group (unbatched sends, high-throughput FIFO)",
    ),
    "fold": Quota(
        "fold of one job (one invocation at a time per message group)",
        0,
        "measured: bench/fold_throughput.py, 5 ms per DynamoDB and 25 ms per S3 call",
    ),
    "ddb_write": Quota(
        "DynamoDB on-demand write request units, one table",
        40_000,
        "DynamoDB quotas: 40,000 write request units/s per on-demand table by default",
    ),
    "ddb_read": Quota(
        "DynamoDB on-demand read request units, one table",
        40_000,
        "DynamoDB quotas: 40,000 read request units/s per on-demand table by default",
    ),
    "ddb_partition": Quota(
        "DynamoDB write units on one partition key (the job's own, or one of its shards)",
        1_000,
        "DynamoDB: 1,000 write units/s per partition key value; a write costs a unit per KB of its item",
    ),
    "s3_put": Quota(
        "S3 PUT/POST on one prefix (grads/<job>/)",
        3_500,
        "S3 performance guidelines: 3,500 PUT/COPY/POST/DELETE per second per prefix",
    ),
    "s3_get": Quota(
        "S3 GET on one prefix (grads/<job>/)", 5_500, "S3 performance guidelines: 5,500 GET/HEAD per second per prefix"
    ),
    "cloudfront": Quota(
        "CloudFront requests, one distribution", 250_000, "CloudFront quotas: 250,000 requests/s per distribution"
    ),
}


class TokenBucket:
    """A quota: refills at `rate` per second and holds `burst` seconds of it."""

    def __init__(self, rate: float, burst: float = 1.0):
        self.rate, self.capacity, self.tokens = rate, rate * burst, rate * burst

    def take(self, wanted: float, dt: float) -> float:
        """Grant what the bucket holds of `wanted` after `dt` seconds of refill."""
        self.tokens = min(self.capacity, self.tokens + self.rate * dt)
        granted = min(wanted, self.tokens)
        self.tokens -= granted
        return granted


def hottest_partition(calls: dict[str, float]) -> float:
    """Write units per task on the busiest partition key, as counted by kind
    (bench/cost.py): the job's own, or one shard of a sharded kind (its
    kind's units over its shards: the shard is a hash of a lease or volunteer id)."""
    from chalicelib.store.table import SHARDS

    per_key = [calls.get("dynamodb-partition:job write units", 0.0)]
    for kind, shards in SHARDS.items():
        per_key.append(calls.get(f"dynamodb-partition:job shard {kind} write units", 0.0) / shards)
    return max(per_key)


def per_task_demand(calls: dict[str, float], scenario: Scenario) -> dict[str, float]:
    """Requests (or units) each resource sees per completed task."""
    step, batches, groups = scenario.step, scenario.batches, scenario.fold_groups
    api_handler_seconds = (
        0.030
        + 0.005
        * (calls.get("dynamodb:PutItem", 0) + calls.get("dynamodb:DeleteItem", 0) + calls.get("dynamodb:UpdateItem", 0))
        + 0.025 * 1
        + 0.010 * 4  # SQS: the checks queue and the job's asked, the result sent, the task deleted
    )
    heartbeats = max(0, math.ceil(step / (120 / 3)) - 1)  # 120 s leases, a beat every 40 s
    return {
        # lease and complete, heartbeats, and the page's credit polls meanwhile (frontend/src/volunteer.js)
        "api": sizing.API_REQUESTS_PER_TASK + heartbeats + (step + OVERHEAD_SECONDS) / sizing.CREDIT_POLL_SECONDS,
        "lambda": api_handler_seconds,  # busy Lambda seconds per task: concurrency = rate x this
        # the busiest group: the job's own with one group; with G, a result
        # group (1/G of the results), a middle one (one sum per ten results
        # over G/10 groups) or the top (one sum per hundred)
        "fifo": 1 if groups == 1 else max(1 / groups, 1 / (10 * math.ceil(groups / 10)), 1 / 100),
        "fold": 1,
        "ddb_write": calls.get("dynamodb:write units", 0),
        "ddb_read": calls.get("dynamodb:read units", 0),
        "ddb_partition": hottest_partition(calls),
        "s3_put": calls.get("s3:PostObject", 1),
        "s3_get": calls.get("s3:GetObject", 0),
        "cloudfront": 1 + batches + (step + OVERHEAD_SECONDS) / PAGE_POLL_SECONDS,  # weights, batches, status polls
    }


def simulate(
    volunteers: int,
    step: float,
    demand: dict[str, float],
    quotas: dict[str, float],
    seconds: float = 60,
    tick: float = 0.1,
) -> dict[str, dict[str, float]]:
    """Each resource's demand as a share of its quota, and the share throttled."""
    rate = volunteers / (step + OVERHEAD_SECONDS)  # tasks per second, every volunteer busy
    out = {}
    for key, per_task in demand.items():
        limit = quotas[key]
        wanted = rate * per_task  # per second (for Lambda: concurrent executions)
        if key == "lambda":
            out[key] = {"utilization": wanted / limit, "throttled": max(0.0, 1 - limit / wanted) if wanted else 0.0}
            continue
        bucket, granted = TokenBucket(limit), 0.0
        for _ in range(int(seconds / tick)):
            granted += bucket.take(wanted * tick, tick)
        asked = wanted * seconds
        out[key] = {"utilization": wanted / limit, "throttled": 1 - granted / asked if asked else 0.0}
    return out


def measured_inputs(quick: bool) -> tuple[dict[int, dict[str, float]], dict[int, float]]:
    """Calls per task and one job's fold rate (results/s), by fold_groups."""
    from bench import fold_throughput
    from bench.cost import measure
    from bench.fold_throughput import run, run_levels

    if quick:
        fold_throughput.IDENTITIES = fold_throughput.QUICK_IDENTITIES

    calls = {
        groups: measure(tasks=20 if quick else 100, k=K, per_fold=10, fold_groups=groups)["calls_per_task"]
        for groups in (1, GROUPS)
    }
    fold = {
        1: run(40 if quick else 200, K, 10)["aws_results_per_second"],
        GROUPS: run_levels(128 if quick else 2000, 64, GROUPS)["job_aws_results_per_second"],
    }
    return calls, fold


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    calls, fold_rates = measured_inputs(args.quick)
    report = {
        "calls_per_task": calls,
        "fold_results_per_second": fold_rates,
        "overhead_seconds": OVERHEAD_SECONDS,
        "quotas": {k: {"name": q.name, "per_second": q.per_second, "source": q.source} for k, q in QUOTAS.items()},
        "scenarios": {},
    }
    for scenario, setup in SCENARIOS.items():
        step = setup.step
        quotas = {key: (fold_rates[setup.fold_groups] if key == "fold" else q.per_second) for key, q in QUOTAS.items()}
        demand = per_task_demand(calls[setup.fold_groups], setup)
        per_volunteer = {k: demand[k] / (step + OVERHEAD_SECONDS) for k in demand}
        limits_at = {k: quotas[k] / per_volunteer[k] for k in demand}
        runs = {n: simulate(n, step, demand, quotas) for n in VOLUNTEERS}
        first = min(limits_at, key=limits_at.get)
        report["scenarios"][scenario] = {
            "step_seconds": step,
            "fold_groups": setup.fold_groups,
            "fold_results_per_second": quotas["fold"],
            "demand_per_task": demand,
            "volunteers_at_limit": limits_at,
            "first_limit": first,
            "first_limit_volunteers": limits_at[first],
            "runs": runs,
        }
        print(
            f"\n{scenario} ({step} s compute per task + {OVERHEAD_SECONDS} s requests; one job folds "
            f"{quotas['fold']:,.0f} results/s):"
        )
        print(f"  {'resource':<62} {'limit at':>10}  " + "  ".join(f"{n:>9,}" for n in VOLUNTEERS))
        for key in sorted(demand, key=limits_at.get):
            cells = "  ".join(
                f"{runs[n][key]['utilization']:>8.0%}" + ("*" if runs[n][key]["throttled"] > 0.001 else " ")
                for n in VOLUNTEERS
            )
            print(f"  {QUOTAS[key].name:<62} {limits_at[key]:>10,.0f}  {cells}")
        print(
            f"  first limit: {QUOTAS[first].name}, at {limits_at[first]:,.0f} volunteers "
            "(* = the token bucket throttles requests)"
        )
    paper = report["scenarios"][f"paper model, fold_groups {GROUPS}"]
    short = report["scenarios"][f"short step, fold_groups {GROUPS}"]
    local = report["scenarios"]["paper model, 16 local steps"]
    print(
        f"with 16 local steps per task the paper's model first meets {QUOTAS[local['first_limit']].name} at "
        f"{local['first_limit_volunteers']:,.0f} volunteers (the target counts one gradient per task)"
    )
    demo = report["scenarios"][f"demo job, its defaults, fold_groups {GROUPS}"]
    report["targets"] = {
        f"paper model, fold_groups {GROUPS}: 10,000 volunteers hit no limit": paper["first_limit_volunteers"] >= 10_000,
        f"demo job, its defaults, fold_groups {GROUPS}: 10,000 volunteers hit no limit": demo["first_limit_volunteers"]
        >= 10_000,
        f"short step, fold_groups {GROUPS}: first limit at >= 1,000 volunteers": short["first_limit_volunteers"]
        >= 1_000,
    }
    for target, met in report["targets"].items():
        print(f"target {target}: {'met' if met else 'NOT met'}")
    common.save("scale", report, args)


if __name__ == "__main__":
    main()
