"""Rules chosen by name with a few typed settings (optimizers, aggregation
strategies), in the style of Flower's strategies: a sibling class per rule,
typed keyword arguments, and a registry to pick one by name."""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from chalicelib.domain import validate
from chalicelib.domain.errors import BadRequest

R = TypeVar("R", bound="Named")


class Named:
    """A rule with a name; `limits` names its settings (the keyword arguments
    of __init__, each kept as an attribute of the same name) and their ranges."""

    name = ""
    limits: Mapping[str, validate.Range] = {}

    def settings(self) -> dict[str, Any]:
        """The resolved settings, defaults filled in (stored with the job)."""
        return {key: getattr(self, key) for key in self.limits}


def choose(registry: Mapping[str, type[R]], raw: Any, what: str) -> R:
    """The rule a JSON value names: "name" or {"name": ..., settings}."""
    name, settings = (
        (raw, {})
        if isinstance(raw, str)
        else ((raw.get("name"), {k: v for k, v in raw.items() if k != "name"}) if isinstance(raw, dict) else (raw, {}))
    )
    if not isinstance(name, str) or name not in registry:
        raise BadRequest(f"unknown {what} {name!r}; choose one of {sorted(registry)}")
    rule = registry[name]
    return rule(**validate.settings(settings, rule, name))
