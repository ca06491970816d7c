"""The local cloud: the whole of crowdtrain on one machine, with moto's server
standing in for AWS.

Started by `crowdtrain local`: a moto server child process, its DynamoDB writes
atomic as AWS's are (moto_server.py); the stack's
resources created from infra/template.yaml through moto's CloudFormation
(the few resource types moto cannot create, CloudFront and Secrets Manager,
are made from the same definitions by hand or played by the edge server);
the Chalice app served by Chalice's local dev server; the SQS dispatcher in
place of Lambda's event source mappings; and the edge server in place of
CloudFront. `stop()` ends all of it, the child process included.
"""

from __future__ import annotations

import errno
import functools
import importlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests

from crowdtrain.environment import app_environment
from crowdtrain.local.dispatcher import QueueDispatcher, ScheduleRunner, schedule_runners, sqs_dispatchers
from crowdtrain.local.edge import EdgeServer
from crowdtrain.local.shared_clients import serialize_condition_building
from crowdtrain.paths import ROOT, SITE
from crowdtrain.template import load_template, without_unsupported

REGION = "us-east-1"


class PortInUse(RuntimeError):
    """A port the local cloud was told to use is taken."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalCloud:
    stage: str = "local"
    site: Path = SITE
    api_port: int = 0
    web_port: int = 0
    log_dir: Path | None = None
    verbose: bool = False  # print the API's access log
    edge_log: Path | None = None  # the web server's access log (one line per response, with its bytes)
    moto: subprocess.Popen | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    # hex: a token someone pastes after `--admin-token` never starts with "-" (as a urlsafe one may)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(24))
    dispatchers: list[QueueDispatcher | ScheduleRunner] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    def start(self) -> "LocalCloud":
        try:
            self._start_moto()
            self._create_resources()
            self._start_app()
        except BaseException:
            self.stop()
            raise
        return self

    # -- moto --------------------------------------------------------------------
    def _start_moto(self) -> None:
        port = free_port()
        log = open(self.log_dir / "moto.log", "wb") if self.log_dir else subprocess.DEVNULL
        self.moto = subprocess.Popen(
            [sys.executable, "-m", "crowdtrain.local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.moto.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.moto.returncode}")
            try:
                requests.get(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start within 30 s")
        os.environ.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",
            AWS_DEFAULT_REGION=REGION,
        )
        self.session = boto3.Session(region_name=REGION)

    # -- resources from infra/template.yaml -----------------------------------------
    def _create_resources(self) -> None:
        template = load_template()
        local, _ = without_unsupported(template)
        cloudformation = self.session.client("cloudformation")
        name = f"crowdtrain-{self.stage}"
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(local),
            Parameters=[{"ParameterKey": "Stage", "ParameterValue": self.stage}],
        )
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise RuntimeError(f"stack {name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        # Secrets Manager: made from the template's own LeaseSecret definition.
        secret = template["Resources"]["LeaseSecret"]["Properties"]
        secret_name = secret["Name"]["Fn::Sub"].replace("${Stage}", self.stage)
        length = int(secret["GenerateSecretString"]["PasswordLength"])
        arn = self.session.client("secretsmanager").create_secret(
            Name=secret_name, Description=secret["Description"], SecretString=secrets.token_hex(length // 2)
        )["ARN"]
        self.outputs["LeaseSecretId"] = arn

    # -- the app -------------------------------------------------------------------
    def _start_app(self) -> None:
        from chalice.config import Config
        from chalice.local import ChaliceRequestHandler, create_local_server

        self.api_port = self.api_port or free_port()
        self.web_port = self.web_port or free_port()
        env = app_environment(self.outputs, self.web_url, "*", self.admin_token)
        # every local volunteer is 127.0.0.1 (as `chalice local` reports it): no per-address limits here
        env.update(
            MAX_LEASES_PER_ADDRESS="100000",
            VOLUNTEERS_PER_ADDRESS_PER_HOUR="1000000",
            RELEASES_PER_ADDRESS="1000000",
            DISTINCT_ADDRESSES="0",
            CREDIT_TALLY_SECONDS="2",  # a page shows its credit within seconds, not a minute
        )
        os.environ.update(env)
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))  # app.py lives at the checkout's top, as `chalice` expects
        module = importlib.import_module("app")
        queues = {getattr(source, "queue", None) for source in module.app.event_sources} - {None}
        if queues != {env["RESULTS_QUEUE_NAME"], env["PUBLISH_QUEUE_NAME"]}:
            module = importlib.reload(module)  # the queue names are read when app.py is imported
        from chalicelib import services

        serialize_condition_building()  # the API, the fold and the schedules share the clients on threads
        services.reset()
        config = Config(
            chalice_stage=self.stage,
            config_from_disk={
                "version": "2.0",
                "app_name": "crowdtrain",
                "stages": {self.stage: {"environment_variables": env}},
            },
        )
        self.api = _bind(
            "API",
            "--api-port",
            self.api_port,
            lambda: create_local_server(module.app, config, "127.0.0.1", self.api_port),
        )
        if not self.verbose:  # one line per request buries what matters; --verbose shows them
            self.api.server.RequestHandlerClass = functools.partial(
                _quiet(ChaliceRequestHandler), app_object=module.app, config=config
            )
        self._api_thread = threading.Thread(target=self.api.server.serve_forever, name="api", daemon=True)
        self._api_thread.start()
        self.edge = _bind(
            "web server",
            "--web-port",
            self.web_port,
            lambda: EdgeServer(
                self.site,
                self.session.client("s3"),
                self.outputs["BucketName"],
                {"api": self.api_url, "stage": self.stage},
                port=self.web_port,
                access_log=self.edge_log,
            ),
        ).start()
        self.dispatchers = [*sqs_dispatchers(module, self.session.client("sqs")), *schedule_runners(module)]
        for dispatcher in self.dispatchers:
            dispatcher.start()

    def stop(self) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.stop()
        for dispatcher in self.dispatchers:
            dispatcher.join(timeout=5)
        if getattr(self, "api", None):
            self.api.shutdown()
            self.api.server.server_close()
        if getattr(self, "edge", None):
            self.edge.stop()
        if self.moto and self.moto.poll() is None:
            self.moto.terminate()
            try:
                self.moto.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.moto.kill()
                self.moto.wait()

    def __enter__(self) -> "LocalCloud":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _bind(what: str, option: str, port: int, make: Any) -> Any:
    """`make()`, with a taken port reported by name and option instead of a traceback."""
    try:
        return make()
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            raise
        raise PortInUse(
            f"port {port} for the {what} is taken: stop what uses it, or pass {option} with "
            f"another port ({option} 0 picks a free one)"
        ) from None


def _quiet(handler: type) -> type:
    """`handler` without the access log line per request (errors still print)."""
    return type(f"Quiet{handler.__name__}", (handler,), {"log_request": lambda self, *args: None})
