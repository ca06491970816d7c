"""What AWS does and moto 5.2 does not, for one whole `crowdtrain deploy`
against moto's server (tests/test_deploy_moto_server.py).

- CloudFormation: moto creates no CloudFront distribution, origin access
  control or response headers policy, no Secrets Manager secret, no S3 bucket
  policy and no CloudWatch alarm from a template. Each is created here in the
  moto backend that the service's own API uses, so the CLI's later calls
  (create_invalidation, put_secret_value, ...) find them. Moto has no API for
  response headers policies: only its id is kept.
- API Gateway: ImportRestApi and PutRestApi take Swagger 2.0 on AWS (Chalice
  sends it); moto takes only OpenAPI 3 with a description. The paths, methods
  and integrations moto reads are the same in both. A mock integration
  (Chalice's CORS preflight) has no uri or httpMethod; moto's import requires both.

`install()` patches the moto modules of this process, so a ThreadedMotoServer
started here serves the whole template; `serve()` also makes its DynamoDB
writes atomic, as AWS's are (crowdtrain/local/moto_server.py).
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from typing import Any

from moto.apigateway.models import APIGatewayBackend
from moto.cloudformation import parsing
from moto.cloudfront.models import cloudfront_backends
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.common_models import CloudFormationModel
from moto.s3.models import s3_backends
from moto.secretsmanager.models import secretsmanager_backends


def _api_form(value: Any) -> Any:
    """A CloudFormation CloudFront value in the API's shape: every list a {Quantity, Items}."""
    if isinstance(value, list):
        return {"Quantity": len(value), "Items": [_api_form(v) for v in value]}
    if isinstance(value, dict):
        return {k: _api_form(v) for k, v in value.items()}
    return value


class _Created:
    """A resource made in a moto backend: its Ref, its GetAtt values and how it is deleted.
    (moto finds CloudFormation types among CloudFormationModel's direct subclasses.)"""

    TYPE = ""
    ATTRIBUTES: tuple[str, ...] = ()

    def __init__(self, physical_id: str, attributes: dict[str, str], remove=lambda: None):
        self.physical_resource_id, self.attributes, self._remove = physical_id, attributes, remove

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.TYPE

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRIBUTES

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.attributes[attribute_name]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kw):
        return cls.make(resource_name, cloudformation_json["Properties"], account_id, region_name)

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        return original_resource

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        pass

    def delete(self, account_id: str, region_name: str) -> None:
        self._remove()

    def is_created(self) -> bool:
        return True


class Distribution(_Created, CloudFormationModel):
    TYPE, ATTRIBUTES = "AWS::CloudFront::Distribution", ("DomainName", "Id")

    @classmethod
    def make(cls, resource_name, props, account_id, region_name):
        config = _api_form(props["DistributionConfig"])
        config["CallerReference"] = f"{resource_name}-{uuid.uuid4()}"
        backend = cloudfront_backends[account_id]["aws"]
        dist, _, _ = backend.create_distribution(config, tags=[])
        return cls(
            dist.distribution_id,
            {"DomainName": dist.domain_name, "Id": dist.distribution_id},
            lambda: backend.distributions.pop(dist.distribution_id, None),
        )


class OriginAccessControl(_Created, CloudFormationModel):
    TYPE, ATTRIBUTES = "AWS::CloudFront::OriginAccessControl", ("Id",)

    @classmethod
    def make(cls, resource_name, props, account_id, region_name):
        backend = cloudfront_backends[account_id]["aws"]
        control = backend.create_origin_access_control(props["OriginAccessControlConfig"])
        return cls(control.id, {"Id": control.id}, lambda: backend.delete_origin_access_control(control.id))


class ResponseHeadersPolicy(_Created, CloudFormationModel):
    TYPE, ATTRIBUTES = "AWS::CloudFront::ResponseHeadersPolicy", ("Id",)

    @classmethod
    def make(cls, resource_name, props, account_id, region_name):
        policy_id = str(uuid.uuid4())
        return cls(policy_id, {"Id": policy_id})


class Secret(_Created, CloudFormationModel):
    TYPE = "AWS::SecretsManager::Secret"

    @classmethod
    def make(cls, resource_name, props, account_id, region_name):
        backend = secretsmanager_backends[account_id][region_name]
        length = props.get("GenerateSecretString", {}).get("PasswordLength", 32)
        made = backend.create_secret(
            name=props["Name"],
            secret_string=secrets.token_urlsafe(length)[:length],
            secret_binary=None,
            description=props.get("Description"),
            tags=None,
            kms_key_id=None,
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        arn = json.loads(made)["ARN"]
        return cls(
            arn,
            {},
            lambda: backend.delete_secret(arn, recovery_window_in_days=None, force_delete_without_recovery=True),
        )


class BucketPolicy(_Created, CloudFormationModel):
    TYPE = "AWS::S3::BucketPolicy"

    @classmethod
    def make(cls, resource_name, props, account_id, region_name):
        backend = s3_backends[account_id]["aws"]
        backend.put_bucket_policy(props["Bucket"], json.dumps(props["PolicyDocument"]).encode())

        def remove() -> None:  # CloudFormation deletes a policy before its bucket; moto in any order
            if props["Bucket"] in backend.buckets:
                backend.delete_bucket_policy(props["Bucket"])

        return cls(f"{props['Bucket']}-policy", {}, remove)


class Alarm(_Created, CloudFormationModel):
    TYPE = "AWS::CloudWatch::Alarm"

    @classmethod
    def make(cls, resource_name, p, account_id, region_name):
        backend = cloudwatch_backends[account_id][region_name]
        backend.put_metric_alarm(
            name=p["AlarmName"],
            namespace=p["Namespace"],
            metric_name=p["MetricName"],
            comparison_operator=p["ComparisonOperator"],
            evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p["Period"]),
            threshold=float(p["Threshold"]),
            statistic=p["Statistic"],
            description=p.get("AlarmDescription", ""),
            dimensions=p.get("Dimensions", []),
            alarm_actions=p.get("AlarmActions", []),
            treat_missing_data=p.get("TreatMissingData"),
        )
        return cls(p["AlarmName"], {}, lambda: backend.delete_alarms([p["AlarmName"]]))


def _openapi(doc: dict[str, Any]) -> dict[str, Any]:
    if "swagger" not in doc:
        return doc
    doc = {k: v for k, v in doc.items() if k != "swagger"}
    doc["openapi"] = "3.0.1"
    doc["info"] = {"description": "", **doc.get("info", {})}
    return doc


def install() -> None:
    import_rest_api, put_rest_api = APIGatewayBackend.import_rest_api, APIGatewayBackend.put_rest_api
    APIGatewayBackend.import_rest_api = lambda self, api_doc, fail_on_warnings: import_rest_api(
        self, _openapi(api_doc), fail_on_warnings
    )
    APIGatewayBackend.put_rest_api = lambda self, function_id, api_doc, fail_on_warnings, mode="merge": put_rest_api(
        self, function_id, _openapi(api_doc), fail_on_warnings, mode
    )
    put_integration = APIGatewayBackend.put_integration
    APIGatewayBackend.put_integration = (
        lambda self, function_id, resource_id, method_type, integration_type, uri=None, integration_method=None, **kw: (
            put_integration(
                self, function_id, resource_id, method_type, integration_type, uri, integration_method, **kw
            )
        )
    )
    for cache in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cache.cache_clear()


def serve(port: int) -> None:
    """moto's server with these gaps filled, until killed (the tests run it as a subprocess,
    so the patches stay out of the test process)."""
    from moto.server import ThreadedMotoServer

    from crowdtrain.local.moto_server import serialize_dynamodb

    install()
    serialize_dynamodb()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print("ready", flush=True)
    threading.Event().wait()
