"""The one way crowdtrain checks JSON input: small field checks, each failing
with a 400 that names the field, and `settings`, which turns a JSON object
into the typed keyword arguments of a rule (an optimizer or a strategy).

No schema library: these few checks cover every field, keep the Lambda zip
small, and let each message say what was wrong in the caller's terms.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from chalicelib.domain.errors import BadRequest

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # the whole value (fullmatch): no trailing newline
# Deeper JSON than any document of ours is refused before it is parsed (the
# parser recurses, and a few thousand levels end in a RecursionError).
MAX_JSON_DEPTH = 64
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]")


def json_document(text: str | bytes, what: str = "request body") -> Any:
    """Parse JSON no deeper than MAX_JSON_DEPTH; 400 for anything else."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{what} is not UTF-8 JSON")
    depth = deepest = 0
    for bracket in _NOT_BRACKETS.sub("", _STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise BadRequest(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest(f"{what} is not valid JSON")


def body_object(body: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return body


def only_keys(body: Mapping[str, Any], allowed: set[str] | tuple[str, ...], what: str = "request") -> None:
    extra = set(body) - set(allowed)
    if extra:
        raise BadRequest(f"unknown {what} fields {sorted(extra)}; allowed: {sorted(allowed)}")


def _label(what: str, key: str) -> str:
    """How a message names a field: 'dataset.batches', or adam setting 'epsilon'."""
    return repr(what + key) if not what or what.endswith(".") else f"{what}{key!r}"


def integer(body: Mapping[str, Any], key: str, default: int | None, low: int, high: int, what: str = "") -> int:
    name = _label(what, key)
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def number(
    body: Mapping[str, Any],
    key: str,
    default: float | None,
    low: float,
    high: float,
    what: str = "",
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    name = _label(what, key)
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{name} is required")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise BadRequest(f"{name} must be a finite number")
    # an integer is compared as it is: a 400-digit one does not fit a float
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        if not (low_open or high_open):
            raise BadRequest(f"{name} must be between {low} and {high}")
        raise BadRequest(f"{name} must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
    return float(value)


def flag(body: Mapping[str, Any], key: str, default: bool, what: str = "") -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{_label(what, key)} must be true or false")
    return value


def text(body: Mapping[str, Any], key: str, default: str | None, max_len: int = 200) -> str:
    value = body.get(key, default)
    if value is None:
        raise BadRequest(f"{key!r} is required")
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise BadRequest(f"{key!r} must be printable text of 1-{max_len} characters")
    return value


def choice(body: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = body.get(key)
    if value not in allowed:
        raise BadRequest(f"{key!r} must be one of {list(allowed)}")
    return value


def identifier(value: Any, what: str) -> str:
    """A job id or similar: lowercase letters, digits and dashes only, so it is
    safe inside S3 keys and DynamoDB keys (no traversal, no separators)."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"{what} must be 1-63 lowercase letters, digits or dashes")
    return value


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; FLAG marks a true/false one."""

    low: float = 0.0
    high: float = 0.0
    low_open: bool = False
    high_open: bool = False
    boolean: bool = False


FLAG = Range(boolean=True)


class Rule(Protocol):
    """What `settings` reads of a rule's class (domain/named.py's Named)."""

    limits: Mapping[str, Range]


def settings(raw: Any, rule: type[Rule], what: str) -> dict[str, Any]:
    """Keyword arguments for `rule` from a JSON object: each key of
    `rule.limits` checked against its Range, absent ones taken from the
    defaults of `rule.__init__` (a parameter without one is required)."""
    raw = body_object(raw, f"{what} settings")
    only_keys(raw, tuple(rule.limits), f"{what} settings")
    params = inspect.signature(rule.__init__).parameters
    out: dict[str, Any] = {}
    for key, limit in rule.limits.items():
        default = params[key].default
        default = None if default is inspect.Parameter.empty else default
        if limit.boolean:
            out[key] = flag(raw, key, bool(default), f"{what} setting ")
        else:
            out[key] = number(
                raw, key, default, limit.low, limit.high, f"{what} setting ", limit.low_open, limit.high_open
            )
    return out
