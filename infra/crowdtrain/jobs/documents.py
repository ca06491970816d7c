"""A template's job document, as `POST /jobs` takes it: its model in TF.js's
layers format (one shard), the loss and its data's layout."""

from __future__ import annotations

from typing import Any, Protocol

from chalicelib.domain.keys import SHARD_NAME


class Template(Protocol):
    def topology(self) -> dict[str, Any]: ...

    def weight_specs(self) -> list[dict[str, Any]]: ...


def job_document(name: str, template: Template, dataset: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "model": {
            "modelTopology": template.topology(),
            "weightsManifest": [{"paths": [SHARD_NAME], "weights": template.weight_specs()}],
        },
        "loss": "sparseCategoricalCrossentropy",
        "dataset": dataset,
    }
