"""Which job a lease takes a task from. Each job has its own task queue
(store/queues.py), and the running jobs share leases by their `priority`:
a smooth weighted round robin (each turn every running job gains its
priority, the one furthest ahead is asked first and gives back the sum of
them all when it gives a task), so a job started behind another's backlog
is asked within its first few leases, and a paused, finished or deleted
job is never asked at all. The turns are kept per Lambda: each warm Lambda
shares its own leases fairly, so all of them do."""

from __future__ import annotations

import threading
import time
from typing import Callable

from chalicelib.domain.errors import NotFound
from chalicelib.store.jobs import JobRecords
from chalicelib.store.meta import MetaStore

# Statuses a job never leaves: it is not read again once seen in one.
ENDED = ("finished", "deleting")


class JobPicker:
    def __init__(self, jobs: JobRecords, meta: MetaStore, max_age: float, clock: Callable[[], float] = time.monotonic):
        self.jobs, self.meta, self.max_age, self.clock = jobs, meta, max_age, clock
        self._ahead: dict[str, float] = {}  # how far ahead of its share each running job is
        self._running: list[tuple[str, int]] = []
        self._read = float("-inf")
        self._ended: set[str] = set()
        self._lock = threading.Lock()
        self._changes = 0  # the MetaStore's status changes when the running jobs were read

    def order(self) -> list[str]:
        """The running jobs to ask for a task, the one whose turn it is first."""
        with self._lock:
            running = self._jobs()
            self._ahead = {job_id: self._ahead.get(job_id, 0.0) for job_id, _ in running}
            return sorted(self._ahead, key=lambda job_id: -self._ahead[job_id])

    def gave(self, job_id: str) -> None:
        """The job gave this lease its task: every running job gains its
        priority and this one gives back their sum (a lease that went to no
        job moves no turn). Each stays within one whole turn ahead or behind:
        a job that had no task when asked (its round full, its epoch out)
        does not take a run of leases from the others when it has again."""
        with self._lock:
            if job_id not in self._ahead:
                return
            total = sum(priority for _, priority in self._running)
            for other, priority in self._running:
                self._ahead[other] = min(max(self._ahead[other] + priority, -total), total)
            self._ahead[job_id] = max(self._ahead[job_id] - total, -total)

    def _jobs(self) -> list[tuple[str, int]]:
        """(job id, priority) of every running job: one JOBS query and each
        job's META as this Lambda last read it (at most `max_age` old), read
        again `max_age` later, or at once where this Lambda changed a job's
        status itself (a start or resume elsewhere is seen within `max_age`)."""
        if self.clock() - self._read > self.max_age or self.meta.status_changes != self._changes:
            self._changes = self.meta.status_changes
            running = []
            for job_id in self.jobs.ids():
                if job_id in self._ended:
                    continue
                try:
                    status = self.meta.get(job_id, max_age=self.max_age).status
                    if status == "running":
                        running.append((job_id, self.jobs.spec(job_id).priority))
                except NotFound:
                    status = "deleting"
                if status in ENDED:
                    self._ended.add(job_id)
            self._running, self._read = running, self.clock()
        return self._running
