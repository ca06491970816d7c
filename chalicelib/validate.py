"""Small checks for fields of JSON request bodies, each failing with a 400
that names the field."""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from chalicelib.errors import BadRequest

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def only_keys(body: Mapping[str, Any], allowed: set[str], what: str = "request") -> None:
    extra = set(body) - allowed
    if extra:
        raise BadRequest(f"unknown {what} fields {sorted(extra)}; allowed: {sorted(allowed)}")


def integer(body: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{key!r} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key!r} must be an integer")
    if not low <= value <= high:
        raise BadRequest(f"{key!r} must be between {low} and {high}")
    return value


def number(body: Mapping[str, Any], key: str, default: float | None, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{key!r} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{key!r} must be a finite number")
    if not low <= value <= high:
        raise BadRequest(f"{key!r} must be between {low} and {high}")
    return float(value)


def text(body: Mapping[str, Any], key: str, default: str | None, max_len: int = 200) -> str:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{key!r} is required")
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise BadRequest(f"{key!r} must be printable text of 1-{max_len} characters")
    return value


def identifier(value: Any, what: str) -> str:
    """A job id or similar: lowercase letters, digits and dashes only, so it is
    safe inside S3 keys and DynamoDB keys (no traversal, no separators)."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise BadRequest(f"{what} must be 1-63 lowercase letters, digits or dashes")
    return value
