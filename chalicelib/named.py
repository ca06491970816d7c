"""Rules chosen by name with a few settings (optimizers, aggregation strategies)."""
from __future__ import annotations

from typing import Any, Mapping

from chalicelib.errors import BadRequest


class Named:
    """A rule with a name and the setting keys it accepts; subclasses read
    their settings in __init__ and keep each as an attribute of the same name."""

    name = ""
    keys: tuple[str, ...] = ()

    def __init__(self, settings: Mapping[str, Any]):
        unknown = set(settings) - set(self.keys)
        if unknown:
            raise BadRequest(f"unknown {self.name} settings {sorted(unknown)}; allowed: {list(self.keys)}")

    def settings(self) -> dict[str, Any]:
        """The resolved settings, defaults filled in (stored with the job)."""
        return {key: getattr(self, key) for key in self.keys}
