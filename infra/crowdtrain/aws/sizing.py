"""A deploy sized for its crowd (`crowdtrain deploy --volunteers N`): the API
stage's throttle and burst, the fold's reserved concurrency and the default
`fold_groups` that N volunteers need, and the account quotas they are checked
against before anything is created.

Each volunteer's page asks the API for a lease and a completion per task and
for its credit every CREDIT_POLL_SECONDS; a task takes `task_seconds` (the
paper's model: about 15 s). The per-task figures are measured
(tests/test_sizing.py ties each to the benchmark that measures it); the
quotas are read from the account.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

API_REQUESTS_PER_TASK = 2  # lease and complete (the page's loop; bench/cost.py counts them)
CREDIT_POLL_SECONDS = 15  # frontend/src/volunteer.js: CREDIT_EVERY_MS
# Busy API Lambda seconds per task: its calls times AWS's latency (bench/scale.py's model).
API_LAMBDA_SECONDS_PER_TASK = 0.11
# Results one message group folds per second, moto's own time out (bench/fold_throughput.py):
# a job's one group (K = 10), and a result group of a fold in parts.
GROUP_RESULTS_PER_SECOND = 89
RESULT_GROUP_RESULTS_PER_SECOND = 114
HEADROOM = 1.5  # what each figure is sized for, over the crowd's steady demand
UNRESERVED_MINIMUM = 100  # Lambda keeps this much of the account's concurrency unreserved
OTHER_JOBS = 4  # fold executions kept for other jobs beside the big one
MAX_FOLD_GROUPS = 64  # chalicelib/domain/schema.py


@dataclass(frozen=True)
class Sizing:
    volunteers: int
    task_seconds: float
    rate: int  # API stage requests/s
    burst: int
    fold_groups: int  # the default for jobs that can be folded in parts
    fold_concurrency: int  # the fold Lambda's reserved executions
    api_concurrency: int  # executions the API Lambda needs at that rate

    @classmethod
    def for_crowd(cls, volunteers: int, task_seconds: float) -> "Sizing":
        tasks = volunteers / task_seconds  # per second, every volunteer busy
        requests = tasks * API_REQUESTS_PER_TASK + volunteers / CREDIT_POLL_SECONDS
        rate = max(100, math.ceil(requests * HEADROOM))
        needed = tasks * HEADROOM
        groups = 1 if needed <= GROUP_RESULTS_PER_SECOND else math.ceil(needed / RESULT_GROUP_RESULTS_PER_SECOND)
        groups = min(groups, MAX_FOLD_GROUPS)
        middle = math.ceil(groups / 10) if groups > 1 else 0
        return cls(
            volunteers,
            task_seconds,
            rate,
            max(200, rate),  # a second of the rate: room for a crowd's bursts within the account's
            groups,
            # a job's groups, middle groups, top level and credit tally at once, and other jobs'
            groups + middle + 2 + OTHER_JOBS,
            math.ceil(tasks * API_LAMBDA_SECONDS_PER_TASK * HEADROOM),
        )

    @property
    def executions(self) -> int:
        """The account's Lambda concurrency it needs: the fold's, the API's, and what Lambda keeps unreserved."""
        return self.fold_concurrency + self.api_concurrency + UNRESERVED_MINIMUM

    def needs(self) -> list[tuple[str, int, int]]:
        """(quota, what this crowd needs, AWS's default) for each quota it is checked against."""
        return [
            ("Lambda concurrent executions", self.executions, 1_000),
            ("API Gateway account throttle, requests/s", self.rate, 10_000),
            ("API Gateway account burst", self.burst, 5_000),
        ]

    def summary(self) -> str:
        return (
            f"{self.volunteers:,} volunteers, {self.task_seconds:g} s tasks: API throttled to {self.rate:,} requests/s "
            f"(bursts of {self.burst:,}), the fold reserves {self.fold_concurrency} executions, jobs fold in "
            f"{self.fold_groups} group{'s' * (self.fold_groups > 1)} by default"
        )


@dataclass(frozen=True)
class Shortfall:
    """A quota the crowd needs more of."""

    quota: str
    has: float
    needs: float
    request: str  # the Service Quotas request that raises it

    def line(self, volunteers: int) -> str:
        return (
            f"{volunteers:,} volunteers need {self.quota} of {self.needs:,.0f}, and this account has "
            f"{self.has:,.0f}: {self.request}, or deploy for fewer volunteers"
        )


class AccountQuotas:
    """What the account allows in the deploy's region: Lambda's concurrent
    executions (GetAccountSettings) and API Gateway's account throttle (GetAccount)."""

    def __init__(self, session: Any):
        self._lambda, self._apigateway = session.client("lambda"), session.client("apigateway")

    def lambda_concurrency(self) -> int:
        return int(self._lambda.get_account_settings()["AccountLimit"]["ConcurrentExecutions"])

    def api_throttle(self) -> tuple[float, int]:
        settings = self._apigateway.get_account().get("throttleSettings", {})
        return float(settings.get("rateLimit", 10_000)), int(settings.get("burstLimit", 5_000))

    def shortfalls(self, sizing: Sizing) -> list[Shortfall]:
        """Each quota the sizing needs more of than the account has."""
        found = []
        concurrency = self.lambda_concurrency()
        if sizing.executions > concurrency:
            found.append(
                Shortfall(
                    "Lambda concurrent executions",
                    concurrency,
                    sizing.executions,
                    "ask Service Quotas for more (service AWS Lambda, quota L-B99A9384 'Concurrent executions')",
                )
            )
        rate, burst = self.api_throttle()
        if sizing.rate > rate:
            found.append(
                Shortfall(
                    "API Gateway's account throttle (requests/s)",
                    rate,
                    sizing.rate,
                    "ask Service Quotas for more (service Amazon API Gateway, quota L-8A5B8E43 'Throttle rate')",
                )
            )
        if sizing.burst > burst:
            found.append(
                Shortfall(
                    "API Gateway's account burst",
                    burst,
                    sizing.burst,
                    "AWS sets it from the throttle rate: raise that (Service Quotas, Amazon API Gateway, L-8A5B8E43)",
                )
            )
        return found
