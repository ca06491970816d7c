"""HMAC-signed tokens: lease tokens and volunteer tokens, one format.

A lease token is what a volunteer holds for one lease: it names the job,
the task, the base version, the lease id, the identity that took it, when
the task was received and when the token ends (the SQS receipt handle stays
server-side, in the lease record). A volunteer token names an identity the
API issued (tasks/identities.py). The holder can read a token but not change
it: any edit breaks the signature. Keys are derived per scope from the lease
secret (one per job for lease tokens, one for volunteer tokens), so a token
never verifies in another scope even if its payload were copied over. A
token names the secret's key that signed it (`v2.<key id>.<payload>.<mac>`):
the secret can be rotated, and a token of the previous key still verifies
(chalicelib/store/secrets.py) for as long as a lease lasts; one naming any
other key is a 401. A volunteer token ends VOLUNTEER_TOKEN_SECONDS after it
was issued or renewed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import asdict
from typing import Any, Callable

from chalicelib.domain import validate
from chalicelib.domain.errors import BadRequest, Forbidden, Gone, Unauthorized
from chalicelib.domain.records import Lease, Volunteer
from chalicelib.domain.spec import JobSpec
from chalicelib.store.secrets import SecretsManagerKeys, SigningKey, StaticKeys

VERSION = "v2"
MAX_TOKEN_CHARS = 4096
VOLUNTEER_SCOPE = "crowdtrain-volunteer"
# A volunteer token is valid this long after it was issued or renewed (POST
# /volunteers/renew, which a page calls daily): a leaked one stops working.
VOLUNTEER_TOKEN_SECONDS = 30 * 86400


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: only the one unpadded URL-safe encoding of some bytes decodes
    (no padding, no stray characters, no unused trailing bits)."""
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise ValueError("not canonical base64")
    return data


def token_seconds(lease_seconds: float) -> float:
    """How long a lease token is valid: a margin less than its task stays out
    of sight, so two volunteers never hold a valid token for one delivery."""
    return lease_seconds - min(5.0, lease_seconds / 10)


def token_expiry(spec: JobSpec, now: float) -> float:
    """When a lease token taken or renewed `now` stops being valid."""
    return now + token_seconds(spec.lease_seconds)


class TokenSigner:
    """Signs lease tokens with the current key and verifies them with the key they name."""

    def __init__(self, keys: StaticKeys | SecretsManagerKeys, clock: Callable[[], float] = time.time):
        self._keys = keys
        self._clock = clock

    @staticmethod
    def _mac(key: SigningKey, scope: str, signed: str) -> bytes:
        """Keyed per scope (a job's leases, or volunteer identities), so a token never verifies in another."""
        scoped = hmac.new(key.secret, scope.encode(), hashlib.sha256).digest()
        return hmac.new(scoped, signed.encode(), hashlib.sha256).digest()

    def _sign(self, record: Lease | Volunteer, scope: str) -> str:
        key = self._keys.current()
        signed = (
            f"{VERSION}.{key.key_id}.{_b64(json.dumps(asdict(record), separators=(',', ':'), sort_keys=True).encode())}"
        )
        return f"{signed}.{_b64(self._mac(key, scope, signed))}"

    def sign(self, lease: Lease) -> str:
        return self._sign(lease, f"crowdtrain-lease:{lease.job_id}")

    def sign_volunteer(self, volunteer: Volunteer) -> str:
        return self._sign(volunteer, VOLUNTEER_SCOPE)

    def verify_volunteer(self, token: object) -> Volunteer:
        """The identity a volunteer token stands for; 401 if missing, forged or of an unknown key."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("volunteer_token is required: POST /volunteers gives one")
        volunteer, key_id, mac, signed = self._open(token, "volunteer", Volunteer.from_json)
        self._check(
            "volunteer",
            key_id,
            mac,
            VOLUNTEER_SCOPE,
            signed,
            "volunteer token's key is unknown (the secret was rotated since): POST /volunteers for a new one",
        )
        if self._clock() >= volunteer.issued + VOLUNTEER_TOKEN_SECONDS:
            raise Unauthorized(
                "volunteer token expired 30 days after it was issued or renewed: POST /volunteers for a new one "
                "(a page renews its token every day)"
            )
        return volunteer

    def verify(self, token: object, job_id: str) -> Lease:
        """The lease a token stands for; 4xx if forged, for another job, of an unknown key, or expired."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise BadRequest("lease_token must be a non-empty string")
        lease, key_id, mac, signed = self._open(token, "lease", Lease.from_json)
        if lease.job_id != job_id:
            raise Forbidden("lease token belongs to another job")
        self._check(
            "lease",
            key_id,
            mac,
            f"crowdtrain-lease:{job_id}",
            signed,
            "lease token's key is unknown (the lease secret was rotated since)",
        )
        if self._clock() >= lease.expires:
            raise Gone("lease has expired; its task may be handed to another volunteer")
        return lease

    @staticmethod
    def _open(token: str, kind: str, load: Callable[[Any], Any]) -> tuple[Any, str, bytes, str]:
        """A token's record, key id, MAC and signed part; 401 unless it is well formed."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise Unauthorized(f"{kind} token is malformed")
        try:
            record = load(validate.json_document(_unb64(parts[2]), f"{kind} token"))
            mac = _unb64(parts[3])
        except (ValueError, TypeError, BadRequest):
            raise Unauthorized(f"{kind} token is malformed")
        return record, parts[1], mac, ".".join(parts[:3])

    def _check(self, kind: str, key_id: str, mac: bytes, scope: str, signed: str, unknown_key: str) -> None:
        """401 unless the MAC is the named key's over the signed part, in this scope."""
        key = self._keys.find(key_id)
        if key is None:
            raise Unauthorized(unknown_key)
        if not hmac.compare_digest(mac, self._mac(key, scope, signed)):
            raise Unauthorized(f"{kind} token signature does not verify")
