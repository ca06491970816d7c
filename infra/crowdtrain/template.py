"""Reading infra/template.yaml (CloudFormation's short-form tags included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from crowdtrain.paths import TEMPLATE

# Resource types moto's CloudFormation cannot create. On the local cloud the
# edge server plays CloudFront, the lease secret is made by hand, and there
# are no CloudWatch alarms.
LOCAL_UNSUPPORTED = {
    "AWS::CloudFront::Distribution",
    "AWS::CloudFront::OriginAccessControl",
    "AWS::CloudWatch::Alarm",
    "AWS::S3::BucketPolicy",
    "AWS::SecretsManager::Secret",
}


class _Loader(yaml.SafeLoader):
    pass


def _tag(name: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"Ref": value} if name == "Ref" else {f"Fn::{name}": value}

    return construct


for _name in (
    "Ref",
    "Sub",
    "GetAtt",
    "Join",
    "Select",
    "Split",
    "If",
    "Equals",
    "Not",
    "And",
    "Or",
    "FindInMap",
    "Base64",
    "ImportValue",
    "GetAZs",
):
    _Loader.add_constructor(f"!{_name}", _tag(_name))


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_Loader)


def _mentions(value: Any, names: set[str]) -> bool:
    text = json.dumps(value)
    return any(
        f'"Ref": "{n}"' in text or f'"Fn::GetAtt": ["{n}"' in text or f"${{{n}." in text or f"${{{n}}}" in text
        for n in names
    )


def without_unsupported(template: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The template less the resources moto cannot create, and what refers to them."""
    skipped = {name for name, res in template["Resources"].items() if res["Type"] in LOCAL_UNSUPPORTED}
    changed = True
    while changed:  # drop whatever depends on a dropped resource, transitively
        changed = False
        for name, res in template["Resources"].items():
            if name not in skipped and _mentions(res, skipped):
                skipped.add(name)
                changed = True
    local = dict(template)
    local["Resources"] = {k: v for k, v in template["Resources"].items() if k not in skipped}
    local["Outputs"] = {k: v for k, v in template.get("Outputs", {}).items() if not _mentions(v, skipped)}
    return local, sorted(skipped)
