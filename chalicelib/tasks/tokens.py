"""HMAC-signed lease tokens.

A token is what a volunteer holds for one lease: it names the job, the task,
the base version, the lease id and the SQS receipt handle, and when it ends.
The volunteer can read it but not change it: any edit breaks the signature.
Keys are derived per job from the lease secret, so a token minted for one job
never verifies for another even if its payload were copied over. A token
names the secret's key that signed it (`v2.<key id>.<payload>.<mac>`): the
secret can be rotated, and a token of the previous key still verifies
(chalicelib/tasks/keys.py); one naming any other key is a 401.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import asdict
from typing import Callable

from chalicelib import validate
from chalicelib.errors import BadRequest, Forbidden, Gone, Unauthorized
from chalicelib.tasks.keys import SecretsManagerKeys, SigningKey, StaticKeys
from chalicelib.tasks.records import Lease

VERSION = "v2"
MAX_TOKEN_CHARS = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: only the one unpadded URL-safe encoding of some bytes decodes
    (no padding, no stray characters, no unused trailing bits)."""
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise ValueError("not canonical base64")
    return data


class TokenSigner:
    """Signs lease tokens with the current key and verifies them with the key they name."""

    def __init__(self, keys: StaticKeys | SecretsManagerKeys, clock: Callable[[], float] = time.time):
        self._keys = keys
        self._clock = clock

    @staticmethod
    def _mac(key: SigningKey, job_id: str, signed: str) -> bytes:
        job_key = hmac.new(key.secret, f"crowdtrain-lease:{job_id}".encode(), hashlib.sha256).digest()
        return hmac.new(job_key, signed.encode(), hashlib.sha256).digest()

    def sign(self, lease: Lease) -> str:
        key = self._keys.current()
        signed = f"{VERSION}.{key.key_id}.{_b64(json.dumps(asdict(lease), separators=(',', ':'), sort_keys=True).encode())}"
        return f"{signed}.{_b64(self._mac(key, lease.job_id, signed))}"

    def verify(self, token: object, job_id: str) -> Lease:
        """The lease a token stands for; 4xx if forged, for another job, of an unknown key, or expired."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise BadRequest("lease_token must be a non-empty string")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise Unauthorized("lease token is malformed")
        try:
            payload = validate.json_document(_unb64(parts[2]), "lease token")
            lease = Lease.from_json(payload)
            mac = _unb64(parts[3])
        except (ValueError, TypeError, BadRequest):
            raise Unauthorized("lease token is malformed")
        if lease.job_id != job_id:
            raise Forbidden("lease token belongs to another job")
        key = self._keys.find(parts[1])
        if key is None:
            raise Unauthorized("lease token's key is unknown (the lease secret was rotated since)")
        if not hmac.compare_digest(mac, self._mac(key, job_id, ".".join(parts[:3]))):
            raise Unauthorized("lease token signature does not verify")
        if self._clock() >= lease.expires:
            raise Gone("lease has expired; its task may be handed to another volunteer")
        return lease
