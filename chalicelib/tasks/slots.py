"""A lease's two slots as one pair: its identity's (so no identity holds more
than the deployment's limit of leases at once) and its source address's (so
the identities behind one address share a limit), claimed, extended and
freed together (store/volunteers.py holds each); and the identity's pace,
timed by the server from lease to completion (store/paces.py), which sets
its next lease's step budget where a job lets steps vary."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.domain.errors import TooManyRequests
from chalicelib.store.leases import LeaseRecord
from chalicelib.store.paces import Paces
from chalicelib.store.volunteers import VolunteerSlots


@dataclass(frozen=True)
class Seats:
    """The slots one lease holds."""

    volunteer_id: str
    address: str
    lease_id: str
    slot: int
    address_slot: int

    @classmethod
    def of(cls, record: LeaseRecord, lease_id: str) -> "Seats":
        return cls(record.volunteer_id, record.address, lease_id, record.slot, record.address_slot)


class LeaseSlots:
    def __init__(
        self, volunteers: VolunteerSlots, addresses: VolunteerSlots, per_volunteer: int, per_address: int, paces: Paces
    ):
        self.volunteers, self.addresses, self.paces = volunteers, addresses, paces
        self.per_volunteer, self.per_address = per_volunteer, per_address

    def claim(self, volunteer_id: str, address: str, lease_id: str, seconds: float) -> Seats:
        """Both slots for `seconds`, the identity's first; 429 when either is at its limit (nothing then held)."""
        slot = self.volunteers.claim(volunteer_id, lease_id, seconds, self.per_volunteer)
        if slot is None:
            raise TooManyRequests(
                f"volunteer {volunteer_id!r} already holds {self.per_volunteer} "
                "leases; complete or let them expire first"
            )
        address_slot = self.addresses.claim(address, lease_id, seconds, self.per_address)
        if address_slot is None:
            self.volunteers.release(volunteer_id, slot, lease_id)
            raise TooManyRequests(
                f"the volunteers at this address already hold {self.per_address} leases "
                "together; complete or let them expire first"
            )
        return Seats(volunteer_id, address, lease_id, slot, address_slot)

    def extend(self, seats: Seats, seconds: float) -> None:
        """Hold both `seconds` from now (the lease turned out longer, or was renewed)."""
        self.volunteers.extend(seats.volunteer_id, seats.slot, seats.lease_id, seconds)
        self.addresses.extend(seats.address, seats.address_slot, seats.lease_id, seconds)

    def free(self, seats: Seats) -> None:
        self.volunteers.release(seats.volunteer_id, seats.slot, seats.lease_id)
        self.addresses.release(seats.address, seats.address_slot, seats.lease_id)
