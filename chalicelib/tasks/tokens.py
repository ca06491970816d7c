"""HMAC-signed lease tokens.

A token is what a volunteer holds for one lease: it names the job, the task,
the base version, the lease id and the SQS receipt handle, and when it ends.
The volunteer can read it but not change it: any edit breaks the signature.
Keys are derived per job from one secret, so a token minted for one job never
verifies for another even if its payload were copied over.
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
from chalicelib.tasks.records import Lease

VERSION = "v1"
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
    """Signs and verifies lease tokens with keys derived from one secret."""

    def __init__(self, secret: Callable[[], bytes], clock: Callable[[], float] = time.time):
        self._secret = secret
        self._clock = clock

    def _key(self, job_id: str) -> bytes:
        return hmac.new(self._secret(), f"crowdtrain-lease:{job_id}".encode(), hashlib.sha256).digest()

    def sign(self, lease: Lease) -> str:
        body = _b64(json.dumps(asdict(lease), separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self._key(lease.job_id), f"{VERSION}.{body}".encode(), hashlib.sha256).digest()
        return f"{VERSION}.{body}.{_b64(mac)}"

    def verify(self, token: object, job_id: str) -> Lease:
        """The lease a token stands for; 4xx if forged, for another job, or expired."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise BadRequest("lease_token must be a non-empty string")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise Unauthorized("lease token is malformed")
        try:
            payload = validate.json_document(_unb64(parts[1]), "lease token")
            lease = Lease.from_json(payload)
            mac = _unb64(parts[2])
        except (ValueError, TypeError, BadRequest):
            raise Unauthorized("lease token is malformed")
        if lease.job_id != job_id:
            raise Forbidden("lease token belongs to another job")
        expected = hmac.new(self._key(job_id), f"{VERSION}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise Unauthorized("lease token signature does not verify")
        if self._clock() >= lease.expires:
            raise Gone("lease has expired; its task may be handed to another volunteer")
        return lease
