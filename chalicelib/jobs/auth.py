"""Who may call the admin routes.

In AWS the admin routes carry Chalice's IAMAuthorizer: API Gateway checks the
SigV4 signature and only then puts the caller's ARN into the request context.
Chalice's local server admits IAM routes without any check, so the app checks
again: a verified IAM identity, or, where the deployment sets one (the local
stack), a bearer admin token. Anything else is a 401.
"""

from __future__ import annotations

import hmac
from typing import Any

from chalicelib.domain.errors import Unauthorized


class AdminGuard:
    def __init__(self, admin_token: str):
        self._token = admin_token

    def check(self, context: dict[str, Any] | None, headers: Any) -> str:
        """The caller's identity, or Unauthorized."""
        identity = (context or {}).get("identity") or {}
        if identity.get("userArn"):
            return identity["userArn"]
        header = (headers or {}).get("authorization", "") or ""
        if (
            self._token
            and header.startswith("Bearer ")
            and hmac.compare_digest(header[len("Bearer ") :].encode(), self._token.encode())
        ):
            return "admin-token"
        raise Unauthorized(
            "admin routes need AWS IAM (SigV4) credentials"
            + (" or the deployment's admin bearer token" if self._token else "")
        )
