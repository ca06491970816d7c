"""`crowdtrain deploy` and `crowdtrain teardown`: from an AWS account to a CloudFront URL.

Deploy, in order: create or update the CloudFormation stack of
infra/template.yaml (printing its events until it settles); write the
stack's outputs into the stage's environment in .chalice/config.json; run
`chalice deploy --stage`; build the frontend with the API's URL in
config.json; upload it with content types and cache headers; invalidate
CloudFront; print the URL. After the first deploy, plain `chalice deploy
--stage STAGE` works on its own, since the config already holds the names.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import ClientError, WaiterError

from crowdtrain.aws.policy import function_policies, policy_file, queue_name
from crowdtrain.aws.sizing import AccountQuotas, Sizing
from crowdtrain.environment import app_environment
from crowdtrain.paths import ROOT, TEMPLATE
from crowdtrain.template import load_template

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/json", ".map")

# Short-lived: the entry points, which name everything else.
SHORT_CACHE = {"index.html", "dashboard.html", "config.json"}


# Where the data bucket keeps Chalice's deployed state (CloudFront serves only its jobs/*).
STATE_PREFIX = "crowdtrain/deployed/"
# How CloudFormation's import names an existing resource of each type the template retains.
IMPORT_IDENTIFIERS = {"AWS::S3::Bucket": "BucketName", "AWS::DynamoDB::Table": "TableName"}
# API Gateway's own responses that get CORS headers (THROTTLED is a 4XX of its own type).
CORS_GATEWAY_RESPONSES = ("DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED")
# The request headers the app's routes allow (Chalice's CORSConfig defaults).
CORS_HEADERS = "Authorization,Content-Type,X-Amz-Date,X-Amz-Security-Token,X-Api-Key"


def cache_control(name: str) -> str:
    if name in SHORT_CACHE:
        return "no-cache"
    if name.endswith(".wasm"):
        return "public, max-age=86400"
    return "public, max-age=300"


DEFAULT_RATE, DEFAULT_BURST = 100, 200  # the API stage's throttle without --volunteers


class DeployError(RuntimeError):
    pass


class Deployer:
    def __init__(
        self,
        session: Any,
        stage: str,
        root: Path = ROOT,
        run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
        poll_seconds: float = 5,
        alarm_email: str | None = None,
    ):
        if not session.region_name:
            raise DeployError(
                "no AWS region: pass --region, or set AWS_REGION / AWS_DEFAULT_REGION or a profile's region"
            )
        self.session, self.stage, self.root, self.run, self.say = session, stage, root, run, say
        self.poll_seconds, self.alarm_email = poll_seconds, alarm_email
        self.stack_name = f"crowdtrain-{stage}"
        self.cloudformation = session.client("cloudformation")
        self.s3, self.dynamodb, self.sts = session.client("s3"), session.client("dynamodb"), session.client("sts")

    def chalice(self, verb: str) -> subprocess.CompletedProcess:
        """`chalice <verb> --stage <stage>` in the session's region (Chalice's
        own boto3 session reads it from the environment), so the Lambdas and the
        API land beside the stack."""
        region = self.session.region_name
        return self.run(
            [str(Path(sys.executable).parent / "chalice"), verb, "--stage", self.stage],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**os.environ, "AWS_REGION": region, "AWS_DEFAULT_REGION": region},
        )

    # -- 1. the stack ----------------------------------------------------------------
    def deploy_stack(self) -> dict[str, str]:
        body = TEMPLATE.read_text()
        try:
            [stack] = self.cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"]
            exists = True
        except ClientError as err:
            if "does not exist" not in str(err):
                raise
            stack, exists = {}, False
        if not exists and (kept := self.kept_data()):
            self.import_kept_data(kept)
            exists = True
        parameters = self._parameters(stack)
        started = time.time()
        try:
            if exists:
                self.say(f"updating stack {self.stack_name}")
                self.cloudformation.update_stack(StackName=self.stack_name, TemplateBody=body, Parameters=parameters)
            else:
                self.say(f"creating stack {self.stack_name}")
                self.cloudformation.create_stack(StackName=self.stack_name, TemplateBody=body, Parameters=parameters)
        except ClientError as err:
            if "No updates are to be performed" not in str(err):
                raise
            self.say("stack is up to date")
            return self.outputs()
        self._follow("stack_update_complete" if exists else "stack_create_complete", started)
        return self.outputs()

    def _parameters(self, stack: dict[str, Any]) -> list[dict[str, str]]:
        """The stage, and where the alarms' topic e-mails: the address given, or
        what the stack (as described; {} for none) has so far."""
        kept = next((p["ParameterValue"] for p in stack.get("Parameters", []) if p["ParameterKey"] == "AlarmEmail"), "")
        email = self.alarm_email if self.alarm_email is not None else kept
        return [
            {"ParameterKey": "Stage", "ParameterValue": self.stage},
            {"ParameterKey": "AlarmEmail", "ParameterValue": email},
        ]

    def kept_data(self) -> list[dict[str, Any]]:
        """What an earlier `teardown` kept (the template's DeletionPolicy Retain
        resources) and still exists, as CloudFormation's ResourcesToImport.
        Their names are fixed by the template, so a new stack could not create them."""
        template = load_template()
        account = self.sts.get_caller_identity()["Account"]
        kept = []
        for logical_id, resource in template["Resources"].items():
            if resource.get("DeletionPolicy") != "Retain":
                continue
            key = IMPORT_IDENTIFIERS[resource["Type"]]
            name = self._resolve(resource["Properties"][key], account)
            if self._exists(resource["Type"], name):
                kept.append(
                    {
                        "ResourceType": resource["Type"],
                        "LogicalResourceId": logical_id,
                        "ResourceIdentifier": {key: name},
                    }
                )
        return kept

    def _resolve(self, name: Any, account: str) -> str:
        text = name.get("Fn::Sub") if isinstance(name, dict) else name
        if not isinstance(text, str):
            raise DeployError(f"cannot tell the name of a retained resource from the template: {name!r}")
        for variable, value in (
            ("Stage", self.stage),
            ("AWS::AccountId", account),
            ("AWS::Region", self.session.region_name),
        ):
            text = text.replace(f"${{{variable}}}", value)
        if "${" in text:
            raise DeployError(f"cannot tell the name of a retained resource from the template: {name!r}")
        return text

    def _exists(self, resource_type: str, name: str) -> bool:
        try:
            if resource_type == "AWS::S3::Bucket":
                self.s3.head_bucket(Bucket=name)
            else:
                self.dynamodb.describe_table(TableName=name)
            return True
        except ClientError as err:
            if err.response["Error"]["Code"] in ("404", "NoSuchBucket", "ResourceNotFoundException"):
                return False
            raise

    def import_kept_data(self, kept: list[dict[str, Any]]) -> None:
        """Adopt the kept bucket and table into a new stack (a CloudFormation
        IMPORT change set holding only them, as imports require); the update
        that follows adds everything else."""
        template = load_template()
        names = ", ".join(next(iter(k["ResourceIdentifier"].values())) for k in kept)
        self.say(f"found the data an earlier teardown kept ({names}); importing it into stack {self.stack_name}")
        body = {
            "AWSTemplateFormatVersion": template["AWSTemplateFormatVersion"],
            "Parameters": template["Parameters"],
            "Resources": {k["LogicalResourceId"]: template["Resources"][k["LogicalResourceId"]] for k in kept},
        }
        started = time.time()
        change_set = {"StackName": self.stack_name, "ChangeSetName": "import-kept-data"}
        self.cloudformation.create_change_set(
            **change_set,
            ChangeSetType="IMPORT",
            TemplateBody=json.dumps(body),
            Parameters=self._parameters({}),
            ResourcesToImport=kept,
        )
        try:
            self.cloudformation.get_waiter("change_set_create_complete").wait(
                **change_set, WaiterConfig={"Delay": self.poll_seconds}
            )
        except WaiterError as err:
            raise DeployError(f"CloudFormation refused to import {names}: {err}")
        self.cloudformation.execute_change_set(**change_set)
        self._follow("stack_import_complete", started)

    def _follow(self, waiter_name: str, since: float) -> None:
        """Print stack events until the stack settles (a waiter decides when)."""
        waiter = self.cloudformation.get_waiter(waiter_name)
        seen: set[str] = set()
        while True:
            self._print_events(seen, since)
            try:
                waiter.wait(StackName=self.stack_name, WaiterConfig={"Delay": self.poll_seconds, "MaxAttempts": 1})
                self._print_events(seen, since)
                return
            except WaiterError as err:
                if "Max attempts exceeded" not in str(err):
                    self._print_events(seen, since)
                    raise DeployError(f"stack {self.stack_name} failed: {err}")

    def _print_events(self, seen: set[str], since: float) -> None:
        events = self.cloudformation.describe_stack_events(StackName=self.stack_name)["StackEvents"]
        for event in reversed(events):
            if event["EventId"] in seen or event["Timestamp"].timestamp() < since - 5:
                continue
            seen.add(event["EventId"])
            reason = f"  {event['ResourceStatusReason']}" if event.get("ResourceStatusReason") else ""
            self.say(f"  {event['LogicalResourceId']:<22} {event['ResourceStatus']}{reason}")

    def outputs(self) -> dict[str, str]:
        stack = self.cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    # -- 2. chalice config ------------------------------------------------------------
    def write_chalice_config(self, outputs: dict[str, str], sizing: Sizing | None = None) -> dict[str, str]:
        path = self.root / ".chalice" / "config.json"
        config = json.loads(path.read_text())
        stage = config.setdefault("stages", {}).setdefault(self.stage, {})
        domain = outputs["DistributionDomain"]
        env = app_environment(outputs, f"https://{domain}/", f"https://{domain}")
        if sizing is not None:
            env["DEFAULT_FOLD_GROUPS"] = str(sizing.fold_groups)
        stage.setdefault("environment_variables", {}).update(env)
        stage.setdefault("api_gateway_stage", "api")
        stage["autogen_policy"] = False
        stage.pop("iam_policy_file", None)  # each function has its own (below)
        functions = stage.setdefault("lambda_functions", {})
        if sizing is not None:
            functions.setdefault("fold", {})["reserved_concurrency"] = sizing.fold_concurrency
        for function, policy in function_policies(self.stage, outputs).items():
            functions.setdefault(function, {})["iam_policy_file"] = policy_file(self.stage, function)
            (path.parent / policy_file(self.stage, function)).write_text(json.dumps(policy, indent=2) + "\n")
        path.write_text(json.dumps(config, indent=2) + "\n")
        self.say(
            f"wrote stage {self.stage} of {path.relative_to(self.root)} and its functions' IAM policies, "
            f"pinned to account {outputs['AccountId']} in {outputs['Region']}"
        )
        return env

    # -- 3. the app -------------------------------------------------------------------
    def deploy_app(self) -> str:
        self.say(f"chalice deploy --stage {self.stage} (in {self.session.region_name})")
        proc = self.chalice("deploy")
        if proc.returncode != 0:
            raise DeployError(f"chalice deploy failed:\n{proc.stdout}\n{proc.stderr}")
        match = re.search(r"Rest API URL: (\S+)", proc.stdout)
        if not match:
            raise DeployError(f"chalice deploy printed no Rest API URL:\n{proc.stdout}")
        return match.group(1).rstrip("/")

    # -- 4. the frontend ----------------------------------------------------------------
    def publish_frontend(self, outputs: dict[str, str], api_url: str) -> str:
        build = self.run(["node", "build.mjs"], cwd=self.root / "frontend", capture_output=True, text=True)
        if build.returncode != 0:
            raise DeployError(f"frontend build failed:\n{build.stderr}")
        dist = self.root / "frontend" / "dist"
        files = {p.relative_to(dist).as_posix(): p.read_bytes() for p in sorted(dist.rglob("*")) if p.is_file()}
        # The stage's own settings; the build itself stays stage-free.
        files["config.json"] = json.dumps({"api": api_url, "stage": self.stage}).encode()
        for i, (key, body) in enumerate(files.items(), 1):
            kind = mimetypes.guess_type(key)[0] or "application/octet-stream"
            self.s3.put_object(
                Bucket=outputs["FrontendBucketName"],
                Key=key,
                Body=body,
                ContentType=kind,
                CacheControl=cache_control(key),
            )
            self.say(f"  uploaded {i}/{len(files)} {key}")
        self.session.client("cloudfront").create_invalidation(
            DistributionId=outputs["DistributionId"],
            InvalidationBatch={"Paths": {"Quantity": 1, "Items": ["/*"]}, "CallerReference": str(time.time())},
        )
        url = f"https://{outputs['DistributionDomain']}/"
        self.say(f"invalidated CloudFront; volunteers visit {url}")
        return url

    def _rest_api_id(self) -> str:
        deployed = json.loads((self.root / ".chalice" / "deployed" / f"{self.stage}.json").read_text())
        return next(r for r in deployed["resources"] if r.get("resource_type") == "rest_api")["rest_api_id"]

    def readable_errors(self, origin: str) -> None:
        """API Gateway's own answers (its throttle's 429, a 5xx of its own or
        of a failed Lambda, a 4xx before the app) carry the CORS headers the
        app's routes send, so the page reads the status instead of seeing an
        opaque network error (and retries a throttled call). Gateway responses
        take effect in a new deployment of the stage."""
        api_id, client = self._rest_api_id(), self.session.client("apigateway")
        for kind in CORS_GATEWAY_RESPONSES:
            client.put_gateway_response(
                restApiId=api_id,
                responseType=kind,
                responseParameters={
                    "gatewayresponse.header.Access-Control-Allow-Origin": f"'{origin}'",
                    "gatewayresponse.header.Access-Control-Allow-Headers": f"'{CORS_HEADERS}'",
                },
            )
        client.create_deployment(restApiId=api_id, stageName="api", description="gateway responses with CORS")
        self.say(f"API Gateway's own errors ({', '.join(CORS_GATEWAY_RESPONSES)}) allow {origin}")

    def throttle_api(self, rate: float, burst: int) -> None:
        """Stage-wide API Gateway throttling (Chalice has no setting for it):
        volunteers' routes are public, so a flood is cut off before Lambda."""
        self.session.client("apigateway").update_stage(
            restApiId=self._rest_api_id(),
            stageName="api",
            patchOperations=[
                {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(rate)},
                {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(burst)},
            ],
        )
        self.say(f"API throttled to {rate} requests/s, bursts of {burst}")

    # -- Chalice's deployed state, kept with the stack ---------------------------------
    @property
    def _state_path(self) -> Path:
        return self.root / ".chalice" / "deployed" / f"{self.stage}.json"

    def restore_app_state(self, outputs: dict[str, str]) -> bool:
        """Chalice's record of what it deployed (the REST API, the Lambdas, the
        queue trigger), as the last deploy from any checkout saved it: without
        it, `chalice deploy` in a fresh clone makes a second REST API and fails
        on the existing event source mapping. False on a first deploy."""
        try:
            body = self.s3.get_object(Bucket=outputs["BucketName"], Key=self._state_key)["Body"]
        except ClientError as err:
            if err.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return False
            raise
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        self._state_path.write_bytes(body.read())
        self.say(f"restored Chalice's deployed state from s3://{outputs['BucketName']}/{self._state_key}")
        return True

    def save_app_state(self, outputs: dict[str, str]) -> None:
        self.s3.put_object(
            Bucket=outputs["BucketName"],
            Key=self._state_key,
            Body=self._state_path.read_bytes(),
            ContentType="application/json",
        )
        self.say(f"saved Chalice's deployed state to s3://{outputs['BucketName']}/{self._state_key}")

    @property
    def _state_key(self) -> str:
        return f"{STATE_PREFIX}{self.stage}.json"

    def deploy(
        self, rate: float | None, burst: int | None, sizing: Sizing | None = None, quotas: AccountQuotas | None = None
    ) -> str:
        """Stack, app, throttle, frontend. With `sizing` (--volunteers), the
        account's quotas are read first and a shortfall stops the deploy before
        anything is made; the throttle, the fold's reserved concurrency and the
        default fold groups come from the sizing unless given."""
        if sizing is not None:
            shortfalls = (quotas or AccountQuotas(self.session)).shortfalls(sizing)
            if shortfalls:
                raise DeployError("; ".join(s.line(sizing.volunteers) for s in shortfalls))
            self.say(sizing.summary())
        rate = rate if rate is not None else (sizing.rate if sizing else DEFAULT_RATE)
        burst = burst if burst is not None else (sizing.burst if sizing else DEFAULT_BURST)
        outputs = self.deploy_stack()
        env = self.write_chalice_config(outputs, sizing)
        self.restore_app_state(outputs)
        api_url = self.deploy_app()
        self.save_app_state(outputs)
        self.say(f"API: {api_url}")
        self.readable_errors(env["CORS_ORIGIN"])
        self.throttle_api(rate, burst)
        return self.publish_frontend(outputs, api_url)

    # -- the lease secret ----------------------------------------------------------------
    def rotate_secret(self) -> str:
        """A new version of the stage's lease secret (AWSCURRENT; the old one
        becomes AWSPREVIOUS). Leases signed with the old key still complete;
        those two rotations old do not, so rotate at most once per longest
        lease plus the Lambdas' REFRESH_SECONDS (chalicelib/store/secrets.py)."""
        secret_id = self.outputs()["LeaseSecretId"]
        reply = self.session.client("secretsmanager").put_secret_value(
            SecretId=secret_id, SecretString=secrets.token_urlsafe(48)
        )
        self.say(f"rotated the lease secret of {self.stack_name}: new version {reply['VersionId']}")
        return reply["VersionId"]

    # -- teardown ----------------------------------------------------------------------
    def teardown(self, delete_data: bool = False) -> None:
        """Delete the app and the stack. The data bucket and the table are
        kept (DeletionPolicy Retain) unless `delete_data`. Every step is tried;
        if any failed, DeployError names them (the CLI exits non-zero)."""
        failed: list[str] = []

        def step(name: str, action: Callable[[], Any]) -> None:
            try:
                action()
                self.say(f"{name}: done")
            except (ClientError, WaiterError, DeployError) as err:
                failed.append(name)
                self.say(f"{name}: FAILED: {err}")

        def chalice_delete() -> None:
            self.restore_app_state(outputs)  # what to delete, whichever checkout deployed it
            proc = self.chalice("delete")
            if proc.returncode != 0:
                lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
                raise DeployError(" ".join(lines[-3:]) or f"exit status {proc.returncode}")
            # a later deploy starts afresh, not from the state of what is gone
            self.s3.delete_object(Bucket=outputs["BucketName"], Key=self._state_key)

        outputs = self.outputs()
        step("chalice delete", chalice_delete)
        s3 = self.session.resource("s3")
        step(
            f"empty {outputs['FrontendBucketName']}",
            lambda: s3.Bucket(outputs["FrontendBucketName"]).objects.all().delete(),
        )
        step("delete the jobs' task queues", lambda: self._delete_job_queues(outputs))
        step(f"delete stack {self.stack_name}", self._delete_stack)
        if delete_data:
            bucket = s3.Bucket(outputs["BucketName"])
            step(
                f"delete {outputs['BucketName']} and its objects",
                lambda: (bucket.objects.all().delete(), bucket.delete()),
            )
            step(
                f"delete table {outputs['TableName']}",
                lambda: self.dynamodb.delete_table(TableName=outputs["TableName"]),
            )
        else:
            self.say(
                f"kept the data: bucket {outputs['BucketName']}, table {outputs['TableName']} "
                "(teardown --delete-data removes them)"
            )
        if failed:
            raise DeployError(f"teardown of {self.stack_name} incomplete; failed: {', '.join(failed)}")

    def _delete_job_queues(self, outputs: dict[str, str]) -> None:
        """Each job's task queue (chalicelib/store/queues.py): made by the app, not the stack."""
        sqs = self.session.client("sqs")
        prefix = queue_name(outputs["TaskQueueUrl"]) + "-j-"
        for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix):
            for url in page.get("QueueUrls", []):
                sqs.delete_queue(QueueUrl=url)

    def _delete_stack(self) -> None:
        self.cloudformation.delete_stack(StackName=self.stack_name)
        self.cloudformation.get_waiter("stack_delete_complete").wait(StackName=self.stack_name)
