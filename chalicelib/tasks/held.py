"""A held lease, as a heartbeat, a completion and a release each meet it
first: its token verified, its caller proved the identity that took it, and
its record moved on by one conditional write (404 if gone, 409 if no longer
where the move starts)."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.domain.records import Lease
from chalicelib.domain.wire import HeldLease
from chalicelib.store.leases import LeaseRecord, LeaseRecords
from chalicelib.tasks.identities import Identities
from chalicelib.tasks.tokens import TokenSigner


class HeldLeases:
    def __init__(self, signer: TokenSigner, identities: Identities, leases: LeaseRecords):
        self.signer, self.identities, self.leases = signer, identities, leases

    def verify(self, held: HeldLease) -> Lease:
        lease = self.signer.verify(held.lease_token, held.job_id)
        self.identities.check_holder(lease, held.volunteer_token)
        return lease

    def move(self, lease: Lease, source: str, target: str, **fields: Any) -> LeaseRecord:
        """The lease's record as it was, once moved from `source` to `target`."""
        moved, record = self.leases.transition(lease.job_id, lease.lease_id, source, target, **fields)
        if record is None:
            raise NotFound("no such lease (was the job deleted?)")
        if not moved:
            raise Conflict(f"lease is already {record.state}; each lease is completed or released once")
        return record

    def reopen(self, lease: Lease) -> None:
        """A completion that could not be handed on goes back to leased: the volunteer may upload or complete again."""
        self.leases.move(lease.job_id, lease.lease_id, "completed", "leased")
