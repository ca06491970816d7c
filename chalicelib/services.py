"""Builds the app's parts from settings, lazily and once per process.

boto3 clients are created on first use and reused by every request a warm
Lambda serves; every record class is handed the same DynamoDB table. Tests
call `reset()` after changing the environment (and inside moto's mock) so the
next request builds fresh parts, and `override()` to put a part of their own
in place before anything that depends on it is built.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from chalicelib.domain.config import settings
from chalicelib.fold.commit import VersionCommit
from chalicelib.fold.credit import CreditNotices, CreditTally
from chalicelib.fold.discards import Discards
from chalicelib.fold.fold import Fold
from chalicelib.fold.partials import PartialSums
from chalicelib.fold.replicas import Replicas
from chalicelib.fold.stores import FoldStores
from chalicelib.fold.updates import Updates
from chalicelib.fold.vetting import GradientVetting
from chalicelib.jobs.admin import InFlight, JobAdmin, JobLimits
from chalicelib.jobs.auth import AdminGuard
from chalicelib.jobs.credit import CreditView
from chalicelib.publish.status import Sources, StatusBoard
from chalicelib.store.addresses import IssuedIdentities
from chalicelib.store.budgets import ReleaseBudgets
from chalicelib.store.credits import CreditTallies
from chalicelib.store.due import DuePublishes
from chalicelib.store.paces import Paces
from chalicelib.store.reputations import Reputations
from chalicelib.store.rounds import RoundSeats
from chalicelib.store.stores import Stores
from chalicelib.store.volunteers import VolunteerSlots
from chalicelib.tasks.answers import Answers
from chalicelib.tasks.completion import Completions
from chalicelib.tasks.epochs import EpochQueue
from chalicelib.tasks.evaluations import Evaluations
from chalicelib.tasks.handout import Handout
from chalicelib.tasks.held import HeldLeases
from chalicelib.tasks.identities import Identities
from chalicelib.tasks.picker import JobPicker
from chalicelib.tasks.redrive import DeadLetters, Redrive
from chalicelib.tasks.renewal import Heartbeats, ReleaseLimits, Releases
from chalicelib.tasks.slots import LeaseSlots
from chalicelib.tasks.source import LeasePolicy, TaskSource
from chalicelib.tasks.tokens import TokenSigner
from chalicelib.tasks.untrainable import Untrainable


class Services(Stores):
    """The stores (store/stores.py), and the services the routes and handlers call."""

    @cached_property
    def redrive(self) -> Redrive:
        c = self.config
        return Redrive(
            self._sqs,
            [
                DeadLetters("tasks", c.task_dlq_url, c.task_queue_url, fifo=False, route=self.tasks.route),
                DeadLetters("results", c.results_dlq_url, c.results_queue_url, fifo=True),
            ],
            self.quarantine,
        )

    @cached_property
    def epochs(self) -> EpochQueue:
        return EpochQueue(self.meta, self.tasks)

    @cached_property
    def signer(self) -> TokenSigner:
        return TokenSigner(self._lease_keys)

    @cached_property
    def lease_slots(self) -> LeaseSlots:
        c = self.config
        return LeaseSlots(
            self.slots,
            VolunteerSlots(self._table, "ADDRESS"),
            c.max_leases_per_volunteer,
            c.max_leases_per_address,
            Paces(self._table),
        )

    @cached_property
    def source(self) -> TaskSource:
        c = self.config
        policy = LeasePolicy(
            c.lease_wait_seconds,
            c.max_leases_per_volunteer,
            c.max_leases_per_address,
            c.lease_meta_max_age,
            c.distinct_addresses,
        )
        picker = JobPicker(self.jobs, self.meta, c.lease_meta_max_age)
        return TaskSource(self.tasks, self.meta, self.jobs, self.evaluations, RoundSeats(self._table), picker, policy)

    @cached_property
    def answers(self) -> Answers:
        return Answers(self.objects, self.signer)

    @cached_property
    def held(self) -> HeldLeases:
        return HeldLeases(self.signer, self.identities, self.leases)

    @cached_property
    def handout(self) -> Handout:
        return Handout(self.identities, self.lease_slots, self.source, self.leases, self.answers)

    @cached_property
    def completions(self) -> Completions:
        return Completions(
            self.held,
            self.jobs,
            self.results,
            self.source,
            self.objects,
            self.counters,
            self.lease_slots,
            self.evaluations,
        )

    @cached_property
    def heartbeats(self) -> Heartbeats:
        return Heartbeats(self.held, self.jobs, self.source, self.lease_slots, self.answers)

    @cached_property
    def releases(self) -> Releases:
        c = self.config
        limits = ReleaseLimits(
            ReleaseBudgets(self._table),
            ReleaseBudgets(self._table, "ADDRESS"),
            c.releases_per_volunteer,
            c.releases_per_address,
            c.release_window_seconds,
        )
        untrainable = Untrainable(self.meta, self.jobs, self.counters, self.board, self.config.distinct_addresses)
        return Releases(self.held, self.source, self.lease_slots, self.counters, limits, untrainable)

    @cached_property
    def identities(self) -> Identities:
        return Identities(self.signer, IssuedIdentities(self._table), self.config.volunteers_per_address_per_hour)

    @cached_property
    def evaluations(self) -> Evaluations:
        return Evaluations(self.evaluation_records, self.tasks, self.meta, self.board, self.config.distinct_addresses)

    @cached_property
    def vetting(self) -> GradientVetting:
        return GradientVetting(self.objects, self.config.fold_memory_mb * 2**20)

    @cached_property
    def committer(self) -> VersionCommit:
        return VersionCommit(self.meta, self.fold_log)

    @cached_property
    def discards(self) -> Discards:
        return Discards(self.tasks, self.leases, self.counters)

    @cached_property
    def updates(self) -> Updates:
        return Updates(
            self.meta,
            self.versions,
            self.epochs,
            self.vetting,
            self.committer,
            self.discards,
            CreditNotices(self.results, self.config.credit_tally_seconds),
            self.config.distinct_addresses,
        )

    @cached_property
    def credit_tally(self) -> CreditTally:
        return CreditTally(self.meta, self.jobs, self.fold_log, self.credits, CreditTallies(self._table), self.board)

    @cached_property
    def credit(self) -> CreditView:
        return CreditView(self.jobs, self.credits, self.identities)

    @cached_property
    def fold(self) -> Fold:
        stores = FoldStores(self.jobs, self.meta, self.leases, self.counters, self.tasks)
        replicas = Replicas(
            stores,
            self.vetting,
            self.discards,
            self.updates,
            self.awaiting,
            Reputations(self._table),
            self.config.distinct_addresses,
        )
        return Fold(
            stores,
            self.vetting,
            self.discards,
            self.updates,
            self.sums,
            replicas,
            self.board,
            self.config.distinct_addresses,
        )

    @cached_property
    def sums(self) -> PartialSums:
        return PartialSums(self.leases, self.vetting, self.discards, self.objects, self.results, self.counters)

    @cached_property
    def board(self) -> StatusBoard:
        return StatusBoard(
            self.jobs,
            self.meta,
            self.objects,
            Sources(self.counters, self.fold_log, self.evaluation_records, self.credits),
            DuePublishes(self._sqs, self.config.publish_queue_url) if self.config.publish_queue_url else None,
        )

    @cached_property
    def admin(self) -> JobAdmin:
        c = self.config
        return JobAdmin(
            self.jobs,
            self.meta,
            InFlight(self.tasks, self.awaiting),
            self.board,
            self.versions,
            self.epochs,
            self.objects,
            JobLimits(c.max_parameters, c.max_batches, c.fold_memory_mb * 2**20, c.default_fold_groups),
        )

    @cached_property
    def guard(self) -> AdminGuard:
        return AdminGuard(self.config.admin_token)

    def override(self, **parts: Any) -> "Services":
        """Put parts in place of those this class would build (a test's clock,
        a store that fails on cue). Only before a part that uses them is built."""
        parts_built = {name for cls in type(self).__mro__ for name in vars(cls)}
        built = [name for name in parts_built if name in self.__dict__ and name not in parts and name != "config"]
        if built:
            raise RuntimeError(f"override() must come before these parts are built: {built}")
        self.__dict__.update(parts)
        return self


_current: Services | None = None


def services() -> Services:
    global _current
    if _current is None:
        _current = Services(settings())
    return _current


def override(**parts: Any) -> Services:
    """The current Services with `parts` in place (see Services.override)."""
    return services().override(**parts)


def reset() -> None:
    """Forget settings and clients (tests change the environment between runs)."""
    global _current
    _current = None
    settings.cache_clear()
