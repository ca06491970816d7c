"""The lease secret's keys: the current one signs, the current and the
previous one verify, so a lease taken before a rotation still completes after
it. Each key has an id that tokens carry (docs/security.md#lease-tokens).

In AWS the secret lives in Secrets Manager: a rotation (`crowdtrain
rotate-secret`, i.e. PutSecretValue) makes a new AWSCURRENT version and moves
the old one to AWSPREVIOUS. Each Lambda reads both again every
REFRESH_SECONDS, and at once (at most every RELOAD_SECONDS) when a token names
a key it does not know, which is how a warm Lambda learns of a rotation that a
fresh one already signs with. The previous key verifies for PREVIOUS_KEY_SECONDS
after the rotation (the current version's creation), the longest a lease
lasts, and then no more: a leaked key stops working one rotation later.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

REFRESH_SECONDS = 300
RELOAD_SECONDS = 10
# The longest a lease lasts: 4 x the largest lease_seconds a job may ask for (domain/schema.py).
PREVIOUS_KEY_SECONDS = 4 * (12 * 3600 - 600)


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes


class StaticKeys:
    """One key that never rotates (LEASE_SECRET: local runs without Secrets Manager)."""

    def __init__(self, secret: bytes):
        self._key = SigningKey(hashlib.sha256(secret).hexdigest()[:16], secret)

    def current(self) -> SigningKey:
        return self._key

    def find(self, key_id: str) -> SigningKey | None:
        return self._key if key_id == self._key.key_id else None


class SecretsManagerKeys:
    """The AWSCURRENT and AWSPREVIOUS versions of a Secrets Manager secret;
    a key's id is its version id (without dashes)."""

    def __init__(
        self,
        client: Any,
        secret_id: str,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self._client, self._secret_id, self._clock, self._wall = client, secret_id, clock, wall
        self._keys: dict[str, SigningKey] = {}
        self._current: SigningKey | None = None
        self._loaded_at = -float("inf")
        self._previous_until = -float("inf")  # wall-clock time after which the previous key verifies nothing

    def _version(self, stage: str) -> tuple[SigningKey, float] | None:
        """A version's key, and when it was made."""
        try:
            reply = self._client.get_secret_value(SecretId=self._secret_id, VersionStage=stage)
        except self._client.exceptions.ResourceNotFoundException:
            return None  # no previous version before the first rotation
        key = SigningKey(reply["VersionId"].replace("-", ""), reply["SecretString"].encode())
        return key, reply["CreatedDate"].timestamp()

    def _load(self) -> SigningKey:
        """Both keys read again; the current one."""
        current = self._version("AWSCURRENT")
        if current is None:
            raise RuntimeError(f"lease secret {self._secret_id} has no current version")
        previous = self._version("AWSPREVIOUS")
        self._current, rotated = current
        self._keys = {key.key_id: key for key, _ in (v for v in (current, previous) if v is not None)}
        self._previous_until = rotated + PREVIOUS_KEY_SECONDS
        self._loaded_at = self._clock()
        return self._current

    def current(self) -> SigningKey:
        current = self._current
        if current is None or self._clock() - self._loaded_at >= REFRESH_SECONDS:
            current = self._load()
        return current

    def find(self, key_id: str) -> SigningKey | None:
        self.current()
        if key_id not in self._keys and self._clock() - self._loaded_at >= RELOAD_SECONDS:
            self._load()  # perhaps rotated since: a fresher Lambda signed with the new key
        if self._current is not None and key_id != self._current.key_id and self._wall() > self._previous_until:
            return None  # the previous key, past the longest lease since the rotation
        return self._keys.get(key_id)
