"""Where a lease's task comes from: the held-out checks' queue, then the
queue of the job whose turn it is, past tasks of ended or deleted jobs,
folded batches and evaluations the volunteer answered;
a synchronous job's round seat; and the way a received task goes back."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from chalicelib.domain.errors import NotFound
from chalicelib.domain.records import Task
from chalicelib.domain.spec import JobSpec
from chalicelib.store.jobs import JobRecords
from chalicelib.store.meta import JobMeta, MetaStore
from chalicelib.store.queues import QueueGone, TaskQueue
from chalicelib.store.rounds import RoundSeats
from chalicelib.tasks.evaluations import REQUEUE_DELAY_SECONDS, Evaluations
from chalicelib.tasks.picker import JobPicker
from chalicelib.tasks.tokens import token_seconds

log = logging.getLogger(__name__)

# Receives tried per queue and lease request while skipping tasks of ended jobs, folded batches and the like.
MAX_SKIPS = 5
# How long, in leases after its lease would have ended, a synchronous round's seat let go or lapsed
# is barred to the client that held it. Clients taking turns on one seat need this many more
# addresses; a lone volunteer whose page closed mid-round waits this long for its seat.
SEAT_BAR_LEASES = 4


@dataclass(frozen=True)
class LeasePolicy:
    """The deployment's lease settings (chalicelib/domain/config.py)."""

    wait_seconds: int  # SQS long-poll per receive
    max_leases_per_volunteer: int
    max_leases_per_address: int
    meta_max_age: float  # how old a META read a lease may reuse (each lease would read it otherwise)
    distinct_addresses: bool = True  # a round's seat let go is barred to its address too (off: the local stack)


@dataclass(frozen=True)
class Chosen:
    """A received task, with its job's META and spec as read to choose it."""

    task: Task
    meta: JobMeta
    spec: JobSpec


class TaskSource:
    errors = TaskQueue.errors  # what the queue raises for a delivery it no longer knows

    def __init__(
        self,
        tasks: TaskQueue,
        meta: MetaStore,
        jobs: JobRecords,
        evaluations: Evaluations,
        rounds: RoundSeats,
        picker: JobPicker,
        policy: LeasePolicy,
    ):
        self.tasks, self.meta, self.jobs, self.evaluations, self.rounds = tasks, meta, jobs, evaluations, rounds
        self.picker, self.policy = picker, policy

    def next(self, seconds: int, volunteer_id: str) -> Chosen | None:
        """A task received out of sight for `seconds`: a held-out check that
        is due first, then a training task of the running job whose turn it
        is (tasks/picker.py), or of the next job if that one has none now.
        Tasks met on the way are dropped if their job was deleted or ended or
        their batch is folded, and go back for later if it is paused or they
        are not for this volunteer (a check it answered, a task it handed back)."""
        jobs = self.picker.order()
        for job_id in [None, *jobs]:
            # a check or a job's queue is asked without waiting; only the last job's waits for a
            # task (SQS's short poll may miss a queue's last few messages; a long poll does not)
            wait = self.policy.wait_seconds if jobs and job_id == jobs[-1] else 0
            chosen = self._from(job_id, seconds, wait, volunteer_id)
            if chosen is not None:
                return chosen
        return None

    def _from(self, job_id: str | None, seconds: int, wait: int, volunteer_id: str) -> Chosen | None:
        """A usable task from one queue (None: the checks'), past at most MAX_SKIPS that are not."""
        for _ in range(MAX_SKIPS):
            task = self.tasks.receive(job_id, seconds, wait)
            if task is None:
                return None
            chosen, go_on = self._usable(task, volunteer_id)
            if chosen is not None:
                if job_id is not None:
                    self.picker.gave(job_id)
                return chosen
            if not go_on:
                return None
        return None

    def _usable(self, task: Task, volunteer_id: str) -> tuple[Chosen | None, bool]:
        """The received task with its job's META and spec, or None once it is
        dropped or put back; and whether its queue is worth asking again now
        (not while its job is paused)."""
        live = ("running", "finished") if task.evaluates is not None else ("running",)
        meta: JobMeta | None
        try:
            meta = self.meta.get(task.job_id, max_age=self.policy.meta_max_age)
            if meta.status not in live:  # act on a fresh read only: the job may have just resumed
                meta = self.meta.get(task.job_id)
            spec = self.jobs.spec(task.job_id)
        except NotFound:
            meta = None
        if meta is not None and meta.status == "paused":
            if task.evaluates is not None:  # a paused job's check waits in the checks' queue, asked again later
                self.evaluate_later(task)
                return None, True
            # back to its job's queue for the resume, as a fresh copy: met again and again on a list
            # a second old it would count receives toward the dead-letter queue
            self.put_back(task)
            return None, False
        if (
            meta is None
            or meta.status not in live
            or (task.evaluates is None and meta.is_folded(task.epoch, task.batch))
        ):
            self.retire(task, "dropped")  # its job's queue may be going with it
            return None, True
        if task.evaluates is not None and self.evaluations.answered(task.job_id, task.evaluates, volunteer_id):
            self.evaluate_later(task)
            return None, True
        if task.not_for == volunteer_id and time.time() < task.not_for_until:  # it handed it back: another's
            self.put_back(task)
            return None, True
        return Chosen(task, meta, spec), True

    def seat(self, chosen: Chosen, volunteer_id: str, address: str) -> tuple[JobMeta, bool]:
        """The META to lease `chosen` on, and whether it may be leased: a
        synchronous job's training task first takes a seat in the newest
        version's round (False: the round is full, this volunteer or its
        address held this task's seat in the round until less than a lease
        ago, or sits in its share of the round's seats already, and the task
        went back); a check's batch holds its seat in its version's round."""
        task, spec = chosen.task, chosen.spec
        if not (spec.synchronous and task.evaluates is None):
            return chosen.meta, True
        meta = self.meta.get(task.job_id)  # the newest version: its round is the one to sit in
        holders = (volunteer_id, f"@{address}") if self.policy.distinct_addresses else (volunteer_id,)
        # barred from this seat for SEAT_BAR_LEASES leases after its lease would end (a seat is not
        # extended: tasks/renewal.py), so that clients taking turns need that many more addresses
        bar = token_seconds(spec.lease_seconds) + SEAT_BAR_LEASES * spec.lease_seconds
        task_id = f"{task.epoch}-{task.batch}"
        # at most the client's share of the round's seats: the fold takes no more of its results into the update
        if self.rounds.claim(
            task.job_id, meta.version, task_id, spec.gradients_per_update, holders, bar, spec.share_cap
        ):
            return meta, True
        self.put_back(task)
        return meta, False

    def hide(self, task: Task, seconds: int) -> None:
        """Keep a received task out of sight `seconds` from now (its lease is longer, or renewed)."""
        self.tasks.hide(task, seconds)

    def put_back(self, task: Task) -> None:
        """A received task goes back to the queue now, as a fresh copy (the
        received one deleted), so that a task handed back or waiting for a
        round is leased again at once and does not count as receives toward
        the dead-letter queue."""
        try:
            if task.evaluates is not None:
                self.tasks.enqueue_evaluation(task.job_id, task.evaluates, 1)
            else:
                self.tasks.enqueue_tasks([task])  # as it is: pinned, or not for its releaser
        except QueueGone as err:  # its job was deleted meanwhile: the task goes with it
            log.info("dropped task %s-%s of %s: %s", task.epoch, task.batch, task.job_id, err)
        self.retire(task, "put back")

    def evaluate_later(self, task: Task) -> None:
        """The evaluation back on the queue, out of sight a while (for another volunteer)."""
        assert task.evaluates is not None, "only an evaluation task is evaluated later"  # both callers check
        self.tasks.enqueue_evaluation(task.job_id, task.evaluates, 1, delay=REQUEUE_DELAY_SECONDS)
        self.retire(task, "evaluated later")

    def retire(self, task: Task, why: str = "done") -> None:
        """Delete the delivery of a task that is done or queued again. If that
        fails the task reappears and is leased again; the fold discards its
        second result as a duplicate, so nothing is lost."""
        try:
            self.tasks.delete(task)
        except self.tasks.errors as err:
            log.warning("could not delete task %s-%s of %s (%s): %s", task.epoch, task.batch, task.job_id, why, err)
