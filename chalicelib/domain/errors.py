"""Client-facing errors.

Each subclasses Chalice's view error, so a route that raises one answers with
its status code and a JSON body {"Code": ..., "Message": ...}; code outside a
route (the fold) catches them like any exception.
"""

from chalice import ChaliceViewError


class BadRequest(ChaliceViewError):
    """Malformed or out-of-range input."""

    STATUS_CODE = 400


class Unauthorized(ChaliceViewError):
    """No valid credentials (admin) or a token that does not verify."""

    STATUS_CODE = 401


class Forbidden(ChaliceViewError):
    """Valid credentials that do not cover this resource."""

    STATUS_CODE = 403


class NotFound(ChaliceViewError):
    STATUS_CODE = 404


class Conflict(ChaliceViewError):
    """The request is well formed but the state does not allow it now."""

    STATUS_CODE = 409


class Gone(ChaliceViewError):
    """The lease has ended; its task may already belong to someone else."""

    STATUS_CODE = 410


class PayloadTooLarge(ChaliceViewError):
    STATUS_CODE = 413


class TooManyRequests(ChaliceViewError):
    STATUS_CODE = 429
