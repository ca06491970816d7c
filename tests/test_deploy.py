"""AWS deployment, proven offline: linted templates, a least-privilege policy,
the deploy steps against moto where moto can and botocore's Stubber where
only AWS can."""

import ast
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

from crowdtrain.aws.deploy import STATE_PREFIX, Deployer, DeployError, cache_control
from crowdtrain.aws.policy import FUNCTIONS, function_policies, placeholder_outputs, policy_file
from crowdtrain.paths import ROOT
from crowdtrain.template import TEMPLATE, load_template, without_unsupported

CFN_LINT = Path(sys.executable).parent / "cfn-lint"

# boto3 operation -> the IAM action it needs
OPERATIONS = {
    "put_object": "s3:PutObject",
    "get_object": "s3:GetObject",
    "head_object": "s3:GetObject",
    "delete_objects": "s3:DeleteObject",
    "generate_presigned_post": "s3:PutObject",  # the form is signed with the Lambda's own credentials
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
    "receive_message": "sqs:ReceiveMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "delete_message": "sqs:DeleteMessage",
    "create_queue": "sqs:CreateQueue",
    "get_queue_url": "sqs:GetQueueUrl",
    "delete_queue": "sqs:DeleteQueue",
    "get_item": "dynamodb:GetItem",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "query": "dynamodb:Query",
    "batch_writer": "dynamodb:BatchWriteItem",
    "batch_get_item": "dynamodb:BatchGetItem",
    "delete_item": "dynamodb:DeleteItem",
    "transact_write_items": "dynamodb:PutItem",  # every item of crowdtrain's transactions is a Put
    "get_secret_value": "secretsmanager:GetSecretValue",
}
PAGINATORS = {"list_objects_v2": "s3:ListBucket"}
# Lambda's SQS event source mapping polls the results queue with the fold's role.
EVENT_SOURCE = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}

# a first deploy without --alarm-email: no e-mail subscription
STAGE_DEV = [{"ParameterKey": "Stage", "ParameterValue": "dev"}, {"ParameterKey": "AlarmEmail", "ParameterValue": ""}]


def called_actions() -> set[str]:
    actions = set()
    for path in (ROOT / "chalicelib").rglob("*.py"):
        tree = ast.parse(path.read_text())
        batch_names = {
            item.optional_vars.id
            for node in ast.walk(tree)
            if isinstance(node, ast.With)
            for item in node.items
            if isinstance(item.optional_vars, ast.Name)
            and isinstance(item.context_expr, ast.Call)
            and getattr(item.context_expr.func, "attr", "") == "batch_writer"
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver = node.func.value
            if isinstance(receiver, ast.Name) and receiver.id in batch_names:
                continue  # writes inside a batch writer are its BatchWriteItem
            if node.func.attr in OPERATIONS:
                actions.add(OPERATIONS[node.func.attr])
            if node.func.attr == "get_paginator" and isinstance(node.args[0], ast.Constant):
                actions.add(PAGINATORS[node.args[0].value])
    return actions


REAL = {
    "Partition": "aws",
    "Region": "eu-west-1",
    "AccountId": "123456789012",
    "TableName": "crowdtrain-dev",
    "BucketName": "crowdtrain-dev-data-123456789012",
    "TaskQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/crowdtrain-dev-tasks",
    "ResultsQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/crowdtrain-dev-results.fifo",
    "PublishQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/crowdtrain-dev-publish",
    "TaskDeadLettersUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/crowdtrain-dev-tasks-dlq",
    "ResultDeadLettersUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/crowdtrain-dev-results-dlq.fifo",
    "LeaseSecretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:crowdtrain-dev-lease-secret-AbCdEf",
}


def actions_and_resources(policy: dict) -> tuple[set[str], set[str]]:
    def listed(value):
        return [value] if isinstance(value, str) else value

    return (
        {a for s in policy["Statement"] for a in listed(s["Action"])},
        {r for s in policy["Statement"] for r in listed(s["Resource"])},
    )


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_stage_policies_allow_exactly_what_the_code_calls(stage):
    """All functions' policies together: no action chalicelib never calls, none it calls missing
    (tests/test_iam_roles.py checks each function's own calls against its own policy)."""
    policies = function_policies(stage, placeholder_outputs(stage))
    for function, policy in policies.items():  # the deploy writes the same documents, pinned
        assert json.loads((ROOT / ".chalice" / policy_file(stage, function)).read_text()) == policy
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"][stage]
    assert {f: c["iam_policy_file"] for f, c in config["lambda_functions"].items()} == {
        f: policy_file(stage, f) for f in FUNCTIONS
    }
    allowed = set().union(*(actions_and_resources(p)[0] for p in policies.values()))
    assert not any("*" in a for a in allowed), "wildcard actions"
    allowed -= {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
    needed = called_actions() | EVENT_SOURCE
    assert needed - allowed == set(), f"the code calls actions the policies deny: {needed - allowed}"
    assert allowed - needed == set(), f"the policies allow actions nothing calls: {allowed - needed}"


def test_the_policies_are_pinned_to_the_stacks_account_region_and_names():
    """Exactly these resources: widening any (a wildcard account, region, bucket or log group) fails."""
    policies = function_policies("dev", REAL)
    at = "eu-west-1:123456789012"
    logs = {
        f"arn:aws:logs:{at}:log-group:/aws/lambda/crowdtrain-dev{suffix}{stream}"
        for suffix in ("", "-fold", "-redrive_dead_letters", "-publish_status")
        for stream in ("", ":log-stream:*")
    }
    assert set().union(*(actions_and_resources(p)[1] for p in policies.values())) == logs | {
        f"arn:aws:dynamodb:{at}:table/crowdtrain-dev",
        *(
            f"arn:aws:s3:::crowdtrain-dev-data-123456789012/{key}"
            for key in (
                "jobs/*",
                "grads/*",
                "jobs/*/versions/*",
                "jobs/*/status.json",
                "jobs/index.json",
                "grads/*/sums/*",
            )
        ),
        "arn:aws:s3:::crowdtrain-dev-data-123456789012",
        f"arn:aws:sqs:{at}:crowdtrain-dev-tasks",
        f"arn:aws:sqs:{at}:crowdtrain-dev-tasks-j-????????????",  # each job's queue: not the dead-letter queue's
        f"arn:aws:sqs:{at}:crowdtrain-dev-results.fifo",
        f"arn:aws:sqs:{at}:crowdtrain-dev-publish",
        f"arn:aws:sqs:{at}:crowdtrain-dev-tasks-dlq",
        f"arn:aws:sqs:{at}:crowdtrain-dev-results-dlq.fifo",
        REAL["LeaseSecretId"],
    }
    # each function logs to its own group only
    assert actions_and_resources(policies["fold"])[1] & logs == {
        f"arn:aws:logs:{at}:log-group:/aws/lambda/crowdtrain-dev-fold",
        f"arn:aws:logs:{at}:log-group:/aws/lambda/crowdtrain-dev-fold:log-stream:*",
    }


def test_template_passes_cfn_lint():
    proc = subprocess.run([str(CFN_LINT), "--include-checks", "I", "--", str(TEMPLATE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_template_has_what_the_stage_needs():
    template = load_template()
    resources = template["Resources"]
    kinds = sorted(r["Type"] for r in resources.values())
    # tasks (held-out checks; each job's own are made by the app), results and a dead-letter queue
    # for each, and the status documents due later
    assert kinds.count("AWS::SQS::Queue") == 5
    for queue in ("TaskQueue", "ResultQueue"):
        assert "deadLetterTargetArn" in resources[queue]["Properties"]["RedrivePolicy"]
    assert resources["ResultQueue"]["Properties"]["FifoQueue"] is True
    for bucket in ("DataBucket", "FrontendBucket"):
        assert all(resources[bucket]["Properties"]["PublicAccessBlockConfiguration"].values())
    rules = resources["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert any(r.get("Prefix") == "grads/" and "ExpirationInDays" in r for r in rules)
    assert resources["Table"]["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    assert resources["Table"]["Properties"]["TimeToLiveSpecification"]["AttributeName"] == "ttl"
    assert "GenerateSecretString" in resources["LeaseSecret"]["Properties"]
    origins = resources["Distribution"]["Properties"]["DistributionConfig"]["Origins"]
    assert all("OriginAccessControlId" in o for o in origins)
    assert set(template["Outputs"]) >= {
        "TableName",
        "BucketName",
        "TaskQueueUrl",
        "ResultsQueueUrl",
        "ResultsQueueName",
        "PublishQueueUrl",
        "PublishQueueName",
        "LeaseSecretId",
        "DistributionDomain",
        "DistributionId",
        "FrontendBucketName",
        "TaskDeadLettersUrl",
        "ResultDeadLettersUrl",
    }


def test_cache_headers():
    assert cache_control("index.html") == cache_control("config.json") == "no-cache"
    assert "max-age" in cache_control("worker.js") and "86400" in cache_control("tfjs-backend-wasm.wasm")


def test_every_page_and_job_file_is_served_cross_origin_isolated_as_the_local_edge_serves_it():
    from crowdtrain.local.edge import ISOLATION_HEADERS

    resources = load_template()["Resources"]
    config = resources["CrossOriginIsolation"]["Properties"]["ResponseHeadersPolicyConfig"]
    headers = {h["Header"]: h["Value"] for h in config["CustomHeadersConfig"]["Items"] if h["Override"]}
    assert headers == ISOLATION_HEADERS
    distribution = resources["Distribution"]["Properties"]["DistributionConfig"]
    for behaviour in [distribution["DefaultCacheBehavior"], *distribution["CacheBehaviors"]]:
        assert behaviour["ResponseHeadersPolicyId"] == {"Ref": "CrossOriginIsolation"}


# -- the stack: Stubber (moto's CloudFormation cannot run the whole template) -----------
OUTPUTS = {
    "TableName": "crowdtrain-dev",
    "BucketName": "crowdtrain-dev-data-1",
    "FrontendBucketName": "site",
    "TaskQueueUrl": "https://sqs/1/crowdtrain-dev-tasks",
    "ResultsQueueUrl": "https://sqs/1/r.fifo",
    "ResultsQueueName": "crowdtrain-dev-results.fifo",
    "PublishQueueUrl": "https://sqs/1/crowdtrain-dev-publish",
    "PublishQueueName": "crowdtrain-dev-publish",
    "LeaseSecretId": "arn:secret",
    "TaskDeadLettersUrl": "https://sqs/1/crowdtrain-dev-tasks-dlq",
    "ResultDeadLettersUrl": "https://sqs/1/crowdtrain-dev-results-dlq.fifo",
    "DistributionId": "E123",
    "DistributionDomain": "d111.cloudfront.net",
    "Region": "us-east-1",
    "AccountId": "111111111111",
    "Partition": "aws",
}


def stack(status, outputs=True):
    return {
        "Stacks": [
            {
                "StackName": "crowdtrain-dev",
                "StackStatus": status,
                "CreationTime": datetime.datetime(2026, 1, 1),
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in OUTPUTS.items()] if outputs else [],
            }
        ]
    }


def event(n, resource, status):
    return {
        "EventId": str(n),
        "StackName": "crowdtrain-dev",
        "StackId": "id",
        "LogicalResourceId": resource,
        "ResourceStatus": status,
        "Timestamp": datetime.datetime.now(datetime.timezone.utc),
    }


def stubbed_deployer(tmp_path):
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    lines = []
    deployer = Deployer(session, "dev", root=tmp_path, say=lines.append, poll_seconds=0)
    return deployer, Stubber(deployer.cloudformation), lines


def kept(deployer, bucket=False, table=False) -> list[Stubber]:
    """sts, s3 and DynamoDB stubbed for Deployer.kept_data: whether an earlier teardown kept the bucket, the table."""
    stubs = [Stubber(deployer.sts), Stubber(deployer.s3), Stubber(deployer.dynamodb)]
    stubs[0].add_response(
        "get_caller_identity",
        {"Account": "111111111111", "Arn": "arn:aws:iam::111111111111:user/deployer", "UserId": "AIDAEXAMPLE"},
    )
    bucket_name = {"Bucket": "crowdtrain-dev-data-111111111111"}
    if bucket:
        stubs[1].add_response("head_bucket", {}, bucket_name)
    else:
        stubs[1].add_client_error("head_bucket", "404", http_status_code=404, expected_params=bucket_name)
    if table:
        stubs[2].add_response(
            "describe_table", {"Table": {"TableName": "crowdtrain-dev"}}, {"TableName": "crowdtrain-dev"}
        )
    else:
        stubs[2].add_client_error(
            "describe_table", "ResourceNotFoundException", expected_params={"TableName": "crowdtrain-dev"}
        )
    for each in stubs:
        each.activate()
    return stubs


def test_first_deploy_creates_the_stack_and_prints_its_events(tmp_path):
    deployer, stub, lines = stubbed_deployer(tmp_path)
    kept(deployer)
    stub.add_client_error("describe_stacks", "ValidationError", "Stack with id crowdtrain-dev does not exist")
    stub.add_response(
        "create_stack",
        {"StackId": "id"},
        {
            "StackName": "crowdtrain-dev",
            "TemplateBody": ANY,
            "Parameters": STAGE_DEV,
        },
    )
    stub.add_response("describe_stack_events", {"StackEvents": [event(1, "Table", "CREATE_IN_PROGRESS")]})
    stub.add_response("describe_stacks", stack("CREATE_IN_PROGRESS", outputs=False))
    stub.add_response(
        "describe_stack_events",
        {"StackEvents": [event(2, "Table", "CREATE_COMPLETE"), event(1, "Table", "CREATE_IN_PROGRESS")]},
    )
    stub.add_response("describe_stacks", stack("CREATE_COMPLETE"))
    stub.add_response("describe_stack_events", {"StackEvents": [event(2, "Table", "CREATE_COMPLETE")]})
    stub.add_response("describe_stacks", stack("CREATE_COMPLETE"))
    with stub:
        assert deployer.deploy_stack() == OUTPUTS
    stub.assert_no_pending_responses()
    assert lines[0] == "creating stack crowdtrain-dev"
    assert [l.split()[-1] for l in lines[1:]] == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"]


def test_redeploy_with_no_changes_keeps_the_stack(tmp_path):
    deployer, stub, lines = stubbed_deployer(tmp_path)
    stub.add_response("describe_stacks", stack("CREATE_COMPLETE"))
    stub.add_client_error("update_stack", "ValidationError", "No updates are to be performed.")
    stub.add_response("describe_stacks", stack("UPDATE_COMPLETE"))
    with stub:
        assert deployer.deploy_stack()["DistributionDomain"] == "d111.cloudfront.net"
    assert lines == ["updating stack crowdtrain-dev", "stack is up to date"]


def test_failed_stack_is_an_error(tmp_path):
    deployer, stub, lines = stubbed_deployer(tmp_path)
    kept(deployer)
    stub.add_client_error("describe_stacks", "ValidationError", "Stack with id crowdtrain-dev does not exist")
    stub.add_response(
        "create_stack", {"StackId": "id"}, {"StackName": "crowdtrain-dev", "TemplateBody": ANY, "Parameters": ANY}
    )
    stub.add_response("describe_stack_events", {"StackEvents": [event(1, "Distribution", "CREATE_FAILED")]})
    stub.add_response("describe_stacks", stack("ROLLBACK_COMPLETE", outputs=False))
    stub.add_response("describe_stack_events", {"StackEvents": [event(1, "Distribution", "CREATE_FAILED")]})
    with stub, pytest.raises(DeployError, match="failed"):
        deployer.deploy_stack()
    assert any("CREATE_FAILED" in l for l in lines)


@pytest.mark.parametrize("bucket", [True, False])
def test_a_deploy_over_the_data_a_teardown_kept_imports_it_then_adds_the_rest(tmp_path, bucket):
    """The kept bucket and table have the template's fixed names, so a new stack
    could not create them: they are imported (a change set of only them), then
    the usual update adds everything else."""
    deployer, stub, lines = stubbed_deployer(tmp_path)
    stubs = kept(deployer, bucket=bucket, table=True)
    bodies = []
    deployer.cloudformation.meta.events.register(
        "before-parameter-build.cloudformation.CreateChangeSet",
        lambda params, **kw: bodies.append(params["TemplateBody"]),
    )
    names = {"StackName": "crowdtrain-dev", "ChangeSetName": "import-kept-data"}
    imported = [
        {
            "ResourceType": "AWS::S3::Bucket",
            "LogicalResourceId": "DataBucket",
            "ResourceIdentifier": {"BucketName": "crowdtrain-dev-data-111111111111"},
        }
    ] * bucket + [
        {
            "ResourceType": "AWS::DynamoDB::Table",
            "LogicalResourceId": "Table",
            "ResourceIdentifier": {"TableName": "crowdtrain-dev"},
        }
    ]
    stub.add_client_error("describe_stacks", "ValidationError", "Stack with id crowdtrain-dev does not exist")
    stub.add_response(
        "create_change_set",
        {"Id": "cs", "StackId": "id"},
        {
            **names,
            "ChangeSetType": "IMPORT",
            "TemplateBody": ANY,
            "ResourcesToImport": imported,
            "Parameters": STAGE_DEV,
        },
    )
    stub.add_response("describe_change_set", {**names, "Status": "CREATE_COMPLETE", "ExecutionStatus": "AVAILABLE"})
    stub.add_response("execute_change_set", {}, names)
    stub.add_response("describe_stack_events", {"StackEvents": [event(1, "Table", "IMPORT_COMPLETE")]})
    stub.add_response("describe_stacks", stack("IMPORT_COMPLETE", outputs=False))
    stub.add_response("describe_stack_events", {"StackEvents": [event(1, "Table", "IMPORT_COMPLETE")]})
    stub.add_response(
        "update_stack", {"StackId": "id"}, {"StackName": "crowdtrain-dev", "TemplateBody": ANY, "Parameters": ANY}
    )
    stub.add_response("describe_stack_events", {"StackEvents": [event(2, "Distribution", "CREATE_COMPLETE")]})
    stub.add_response("describe_stacks", stack("UPDATE_COMPLETE"))
    stub.add_response("describe_stack_events", {"StackEvents": []})
    stub.add_response("describe_stacks", stack("UPDATE_COMPLETE"))
    with stub:
        assert deployer.deploy_stack() == OUTPUTS
    for each in [stub, *stubs]:
        each.assert_no_pending_responses()
    assert "found the data an earlier teardown kept" in lines[0] and "crowdtrain-dev" in lines[0]
    template, full = json.loads(bodies[0]), load_template()
    # an import holds only what it imports, as the stack template has it (imports may not add outputs)
    assert template["Resources"] == {
        i["LogicalResourceId"]: full["Resources"][i["LogicalResourceId"]] for i in imported
    }
    assert "Outputs" not in template and template["Parameters"] == full["Parameters"]
    assert all(r["DeletionPolicy"] == "Retain" for r in template["Resources"].values())


def test_throttling_is_applied_to_the_deployed_api(tmp_path):
    deployer, _, lines = stubbed_deployer(tmp_path)
    (tmp_path / ".chalice" / "deployed").mkdir(parents=True)
    (tmp_path / ".chalice" / "deployed" / "dev.json").write_text(
        json.dumps(
            {
                "resources": [
                    {"name": "api_handler", "resource_type": "lambda_function"},
                    {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123"},
                ]
            }
        )
    )
    client = deployer.session.client("apigateway")
    deployer.session = type("S", (), {"client": lambda self, name: client})()
    with Stubber(client) as stub:
        stub.add_response(
            "update_stage",
            {},
            {
                "restApiId": "abc123",
                "stageName": "api",
                "patchOperations": [
                    {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "50"},
                    {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": "80"},
                ],
            },
        )
        deployer.throttle_api(50, 80)
        stub.assert_no_pending_responses()


def test_api_gateways_own_errors_carry_the_routes_cors_headers(tmp_path):
    """A throttled or failed call answered by API Gateway itself must be readable by the page."""
    from chalice import CORSConfig

    deployer, _, lines = stubbed_deployer(tmp_path)
    (tmp_path / ".chalice" / "deployed").mkdir(parents=True)
    (tmp_path / ".chalice" / "deployed" / "dev.json").write_text(
        json.dumps({"resources": [{"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123"}]})
    )
    client = deployer.session.client("apigateway")
    deployer.session = type("S", (), {"client": lambda self, name: client})()
    origin = "https://d111.cloudfront.net"
    headers = CORSConfig(allow_origin=origin).get_access_control_headers()  # what app.py's routes send
    with Stubber(client) as stub:
        for kind in ("DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED"):
            stub.add_response(
                "put_gateway_response",
                {},
                {
                    "restApiId": "abc123",
                    "responseType": kind,
                    "responseParameters": {
                        f"gatewayresponse.header.{name}": f"'{value}'" for name, value in headers.items()
                    },
                },
            )
        stub.add_response("create_deployment", {}, {"restApiId": "abc123", "stageName": "api", "description": ANY})
        deployer.readable_errors(origin)
        stub.assert_no_pending_responses()
    assert "allow https://d111.cloudfront.net" in lines[-1]


# -- the steps moto can run ------------------------------------------------------------------
def test_stage_config_gets_the_stack_outputs(tmp_path):
    (tmp_path / ".chalice").mkdir()
    shutil.copy(ROOT / ".chalice" / "config.json", tmp_path / ".chalice" / "config.json")
    deployer, _, _ = stubbed_deployer(tmp_path)
    deployer.write_chalice_config(OUTPUTS)
    env = json.loads((tmp_path / ".chalice" / "config.json").read_text())["stages"]["dev"]["environment_variables"]
    assert env["RESULTS_QUEUE_NAME"] == "crowdtrain-dev-results.fifo"
    assert env["PUBLIC_BASE_URL"] == "https://d111.cloudfront.net/" and env["LEASE_SECRET_ID"] == "arn:secret"
    for function, policy in function_policies("dev", OUTPUTS).items():  # pinned to the stack's account and region
        assert json.loads((tmp_path / ".chalice" / policy_file("dev", function)).read_text()) == policy


def test_chalice_deploy_step_reads_the_api_url(tmp_path):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(
            cmd,
            0,
            "Creating deployment package.\nResources deployed:\n"
            "  - Rest API URL: https://abc.execute-api.us-east-1.amazonaws.com/api/\n",
            "",
        )

    deployer = Deployer(boto3.Session(region_name="us-east-1"), "dev", root=tmp_path, run=run, say=lambda l: None)
    assert deployer.deploy_app() == "https://abc.execute-api.us-east-1.amazonaws.com/api"
    assert calls[0][1:] == ["deploy", "--stage", "dev"]
    failing = Deployer(
        boto3.Session(region_name="us-east-1"),
        "dev",
        root=tmp_path,
        say=lambda l: None,
        run=lambda cmd, **kw: subprocess.CompletedProcess(cmd, 2, "", "AccessDenied"),
    )
    with pytest.raises(DeployError, match="AccessDenied"):
        failing.deploy_app()


def test_frontend_is_published_with_types_headers_and_an_invalidation(moto_session):
    moto_session.client("s3").create_bucket(Bucket="site")
    distribution = moto_session.client("cloudfront").create_distribution(
        DistributionConfig={
            "CallerReference": "t",
            "Comment": "",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {"Id": "o", "DomainName": "site.s3.amazonaws.com", "S3OriginConfig": {"OriginAccessIdentity": ""}}
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "o",
                "ViewerProtocolPolicy": "allow-all",
                "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",
            },
        }
    )["Distribution"]
    outputs = {**OUTPUTS, "FrontendBucketName": "site", "DistributionId": distribution["Id"]}
    lines = []
    deployer = Deployer(moto_session, "dev", root=ROOT, say=lines.append)  # builds the real frontend
    url = deployer.publish_frontend(outputs, "https://abc.execute-api.us-east-1.amazonaws.com/api")
    assert url == "https://d111.cloudfront.net/"
    s3 = moto_session.client("s3")
    config = s3.get_object(Bucket="site", Key="config.json")
    assert json.loads(config["Body"].read())["api"].startswith("https://abc.execute-api")
    assert config["CacheControl"] == "no-cache"
    wasm = s3.head_object(Bucket="site", Key="tfjs-backend-wasm.wasm")
    assert wasm["ContentType"] == "application/wasm"
    assert s3.head_object(Bucket="site", Key="worker.js")["ContentType"] == "text/javascript"
    assert s3.head_object(Bucket="site", Key="index.html")["ContentType"] == "text/html"
    invalidations = moto_session.client("cloudfront").list_invalidations(DistributionId=distribution["Id"])
    assert invalidations["InvalidationList"]["Quantity"] == 1
    assert any("uploaded" in l for l in lines)


def moto_stack(moto_session) -> dict[str, str]:
    """The stage's stack in moto (less what moto's CloudFormation cannot create), with a job's file and a page."""
    local, _ = without_unsupported(load_template())
    cloudformation = moto_session.client("cloudformation")
    cloudformation.create_stack(StackName="crowdtrain-dev", TemplateBody=json.dumps(local))
    names = {
        o["OutputKey"]: o["OutputValue"]
        for o in cloudformation.describe_stacks(StackName="crowdtrain-dev")["Stacks"][0]["Outputs"]
    }
    s3 = moto_session.client("s3")
    s3.put_object(Bucket=names["BucketName"], Key="jobs/j-1/init/weights.bin", Body=b"x")
    s3.put_object(Bucket=names["FrontendBucketName"], Key="index.html", Body=b"x")
    return names


def teardown(moto_session, tmp_path, delete_data=False, chalice_status=0) -> tuple[list, list[str]]:
    runs, lines = [], []
    deployer = Deployer(
        moto_session,
        "dev",
        root=tmp_path,
        say=lines.append,
        run=lambda cmd, **kw: runs.append(cmd) or subprocess.CompletedProcess(cmd, chalice_status, "", "boom"),
    )
    deployer.teardown(delete_data=delete_data)
    return runs, lines


def test_teardown_deletes_the_app_the_site_and_the_stack_and_keeps_the_data(moto_session, tmp_path):
    names = moto_stack(moto_session)
    sqs = moto_session.client("sqs")
    for job in ("j-1", "j-2"):  # the app makes a queue per job; the stack's own are named alike
        sqs.create_queue(QueueName=f"crowdtrain-dev-tasks-{job}")
    runs, lines = teardown(moto_session, tmp_path)
    assert runs[0][1:] == ["delete", "--stage", "dev"]
    assert sqs.list_queues(QueueNamePrefix="crowdtrain-dev-tasks-j-").get("QueueUrls", []) == []
    cloudformation = moto_session.client("cloudformation")
    assert [s["StackStatus"] for s in cloudformation.list_stacks()["StackSummaries"]] == ["DELETE_COMPLETE"]
    buckets = {b["Name"] for b in moto_session.client("s3").list_buckets()["Buckets"]}
    assert names["FrontendBucketName"] not in buckets and names["BucketName"] in buckets  # DeletionPolicy Retain
    assert moto_session.client("s3").get_object(Bucket=names["BucketName"], Key="jobs/j-1/init/weights.bin")
    assert names["TableName"] in moto_session.client("dynamodb").list_tables()["TableNames"]
    assert "kept the data" in lines[-1]


def test_teardown_with_delete_data_removes_the_bucket_and_the_table(moto_session, tmp_path):
    moto_stack(moto_session)
    teardown(moto_session, tmp_path, delete_data=True)
    assert moto_session.client("s3").list_buckets()["Buckets"] == []
    assert moto_session.client("dynamodb").list_tables()["TableNames"] == []


def test_a_failed_teardown_step_is_an_error_after_the_others_ran(moto_session, tmp_path):
    moto_stack(moto_session)
    with pytest.raises(DeployError, match="failed: chalice delete"):
        teardown(moto_session, tmp_path, chalice_status=1)
    cloudformation = moto_session.client("cloudformation")
    assert [s["StackStatus"] for s in cloudformation.list_stacks()["StackSummaries"]] == ["DELETE_COMPLETE"]


def test_a_deploy_from_a_fresh_checkout_finds_what_the_last_deploy_made(moto_session, tmp_path):
    """Chalice's deployed state is kept in the data bucket: a second clone's
    `chalice deploy` updates the same REST API and Lambdas instead of making new ones."""
    names = moto_stack(moto_session)
    state = {"resources": [{"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "abc123"}]}
    seen = []

    def chalice(root):
        def run(cmd, **kw):
            path = root / ".chalice" / "deployed" / "dev.json"
            seen.append(json.loads(path.read_text()) if path.exists() else None)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(state))  # what chalice deploy writes
            return subprocess.CompletedProcess(cmd, 0, "  - Rest API URL: https://abc123.example/api/\n", "")

        return run

    for clone in ("first", "second"):
        root = tmp_path / clone
        deployer = Deployer(moto_session, "dev", root=root, run=chalice(root), say=lambda l: None)
        assert deployer.restore_app_state(names) is (clone == "second")
        deployer.deploy_app()
        deployer.save_app_state(names)
    assert seen == [None, state]  # the second clone's chalice deploy started from the first's state
    # kept where CloudFront does not serve it (only jobs/* of the data bucket)
    assert not STATE_PREFIX.startswith("jobs/")


def test_rotate_secret_makes_a_new_current_version_and_keeps_the_previous(moto_session, tmp_path):
    manager = moto_session.client("secretsmanager")
    # the stack's secret (moto's CloudFormation cannot create one: made here, named by the stack's output)
    secret_id = manager.create_secret(Name="crowdtrain-dev-lease-secret", SecretString="x" * 64)["ARN"]
    before = manager.get_secret_value(SecretId=secret_id)
    lines = []
    deployer = Deployer(moto_session, "dev", root=tmp_path, say=lines.append)
    deployer.outputs = lambda: {"LeaseSecretId": secret_id}
    version = deployer.rotate_secret()
    current = manager.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    previous = manager.get_secret_value(SecretId=secret_id, VersionStage="AWSPREVIOUS")
    assert current["VersionId"] == version != before["VersionId"] == previous["VersionId"]
    assert len(current["SecretString"]) == 64 and current["SecretString"] != before["SecretString"]
    assert lines == [f"rotated the lease secret of crowdtrain-dev: new version {version}"]


def test_region_is_accepted_before_or_after_the_subcommand_and_reaches_chalice(tmp_path):
    from crowdtrain.cli import parser

    top = parser()
    assert top.parse_args(["deploy", "--stage", "dev", "--region", "eu-west-1"]).region == "eu-west-1"
    assert top.parse_args(["--region", "eu-west-1", "deploy"]).region == "eu-west-1"
    assert top.parse_args(["--region", "eu-west-1", "teardown", "--region", "ap-south-1"]).region == "ap-south-1"
    assert top.parse_args(["jobs"]).region is None  # then boto3's own: AWS_REGION, AWS_DEFAULT_REGION, the profile
    assert len(top.commands) >= 14 and all("--region" in c.format_help() for c in top.commands.values())
    calls = []

    def run(cmd, **kwargs):
        calls.append((cmd, kwargs["env"]))
        return subprocess.CompletedProcess(
            cmd, 0, "  - Rest API URL: https://abc.execute-api.eu-west-1.amazonaws.com/api/\n", ""
        )

    deployer = Deployer(boto3.Session(region_name="eu-west-1"), "dev", root=tmp_path, run=run, say=lambda l: None)
    deployer.deploy_app()
    cmd, env = calls[0]
    assert cmd[1:] == ["deploy", "--stage", "dev"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert deployer.cloudformation.meta.region_name == "eu-west-1"


def test_a_deploy_without_a_region_says_how_to_give_one(monkeypatch, tmp_path):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(DeployError, match="--region"):
        Deployer(boto3.Session(), "dev", root=tmp_path)


def test_deploy_restores_chalices_state_before_chalice_deploy_and_saves_it_after(tmp_path):
    deployer, _, _ = stubbed_deployer(tmp_path)
    order = []
    steps = {
        "deploy_stack": OUTPUTS,
        "write_chalice_config": {"CORS_ORIGIN": "https://d111.cloudfront.net"},
        "restore_app_state": True,
        "deploy_app": "https://abc.example/api",
        "save_app_state": None,
        "readable_errors": None,
        "throttle_api": None,
        "publish_frontend": "https://d111.cloudfront.net/",
    }
    for name, value in steps.items():
        setattr(deployer, name, lambda *args, name=name, value=value: order.append(name) or value)
    assert deployer.deploy(100, 200) == "https://d111.cloudfront.net/"
    assert order == list(steps)


def test_deploy_offers_an_alarm_email_and_refuses_what_is_not_one(capsys):
    from crowdtrain import cli

    args = cli.parser().parse_args(["deploy", "--alarm-email", "ops@example.com"])
    assert args.alarm_email == "ops@example.com"
    assert cli.parser().parse_args(["deploy", "--alarm-email", ""]).alarm_email == ""  # none
    assert cli.parser().parse_args(["deploy"]).alarm_email is None  # the stack's own, kept
    with pytest.raises(SystemExit) as exit_info:
        cli.parser().parse_args(["deploy", "--alarm-email", "not an address"])
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "--alarm-email: not an e-mail address: 'not an address'" in line


def test_a_later_deploy_keeps_the_alarm_email_unless_given_another():
    import boto3

    from crowdtrain.aws.deploy import Deployer

    stack = {"Parameters": [{"ParameterKey": "Stage", "ParameterValue": "dev"}, *STAGE_DEV[1:]]}
    stack["Parameters"][1] = {"ParameterKey": "AlarmEmail", "ParameterValue": "ops@example.com"}
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    emails = {
        given: Deployer(session, "dev", alarm_email=given)._parameters(stack)[1]["ParameterValue"]
        for given in (None, "new@example.com", "")
    }
    assert emails == {None: "ops@example.com", "new@example.com": "new@example.com", "": ""}
    assert Deployer(session, "dev")._parameters({})[1]["ParameterValue"] == ""  # a first deploy: none
