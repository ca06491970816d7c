"""Volunteer identities that cost something.

`POST /volunteers` issues an identity: an id the API chooses (the display
name the volunteer gives, if any, then random hex) in a token signed like
lease tokens (tasks/tokens.py; its own key scope). The page keeps it in
local storage. Every lease, heartbeat, completion and release presents it;
a lease token names the identity that took it, so no other identity can use
it (403). One source address (API Gateway's request context) is issued at
most `volunteers_per_address_per_hour` identities, and its volunteers hold
at most `max_leases_per_address` leases together (tasks/leases.py), so
minting identities from one client buys little. A token is valid for 30 days
from its issue; `POST /volunteers/renew` gives the same identity a fresh one
(the page renews daily), so a leaked token ends.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Callable

from chalicelib.domain.errors import Forbidden, TooManyRequests
from chalicelib.domain.records import Lease, Volunteer
from chalicelib.domain.wire import Issued
from chalicelib.store.addresses import IssuedIdentities
from chalicelib.tasks.tokens import TokenSigner


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:24]


class Identities:
    def __init__(
        self, signer: TokenSigner, issued: IssuedIdentities, per_hour: int, clock: Callable[[], float] = time.time
    ):
        self.signer, self.issued, self.per_hour, self.clock = signer, issued, per_hour, clock

    def issue(self, address: str, name: str = "") -> Issued:
        if not self.issued.take(address, self.per_hour):
            raise TooManyRequests(
                f"this address has been issued {self.per_hour} volunteer identities in the "
                "last hour; keep the one you have (the page stores it)"
            )
        volunteer = Volunteer(f"{_slug(name) or 'v'}.{secrets.token_hex(6)}", self.clock())
        return Issued(volunteer.volunteer_id, self.signer.sign_volunteer(volunteer), name)

    def renew(self, token: Any) -> Issued:
        """A new token for the identity a valid token stands for, signed with the
        current key and valid VOLUNTEER_TOKEN_SECONDS from now: same id, so same credit."""
        volunteer_id = self.verify(token)
        name = volunteer_id.rpartition(".")[0]
        renewed = Volunteer(volunteer_id, self.clock())
        return Issued(volunteer_id, self.signer.sign_volunteer(renewed), "" if name == "v" else name)

    def verify(self, token: Any) -> str:
        """The volunteer id a token stands for (401 if there is none or it is forged)."""
        return self.signer.verify_volunteer(token).volunteer_id

    def check_holder(self, lease: Lease, token: Any) -> str:
        """The presenting identity, which must be the one that took the lease (403 otherwise)."""
        volunteer_id = self.verify(token)
        if lease.volunteer_id != volunteer_id:
            raise Forbidden("this lease was taken by another volunteer; a lease token is not a bearer token")
        return volunteer_id
