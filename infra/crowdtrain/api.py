"""The crowdtrain API as the operator CLI sees it: admin calls authenticated
with the local stack's bearer token, or with SigV4 (the caller's AWS
credentials) against API Gateway's IAM authorizer; uploads through the
presigned forms the API hands out."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import requests


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass
class Api:
    base_url: str
    admin_token: str = ""
    region: str = ""
    timeout: float = 60

    def _headers(self, method: str, url: str, body: bytes, signed: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if not signed:
            return headers
        if self.admin_token:
            headers["Authorization"] = f"Bearer {self.admin_token}"
            return headers
        # SigV4 for API Gateway's IAM authorizer, with whatever credentials boto3 finds.
        import boto3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        session = boto3.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ApiError(401, "no AWS credentials found for signing admin calls (or pass --admin-token)")
        region = self.region or session.region_name or (urlparse(url).hostname or "").split(".")[2]
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())

    def call(self, method: str, path: str, body: Any = None, signed: bool = True) -> Any:
        """One API call; `signed=False` for the public volunteer routes."""
        url = self.base_url.rstrip("/") + path
        data = json.dumps(body).encode() if body is not None else b""
        reply = requests.request(
            method, url, data=data or None, headers=self._headers(method, url, data, signed), timeout=self.timeout
        )
        if reply.status_code == 204:
            return None
        try:
            payload = reply.json()
        except ValueError:
            payload = {"Message": reply.text}
        if reply.status_code >= 400:
            raise ApiError(reply.status_code, payload.get("Message") or payload.get("message") or reply.text)
        return payload

    # -- jobs ------------------------------------------------------------------
    def create_job(
        self,
        spec: dict[str, Any],
        weights: bytes,
        batches: Iterable[bytes],
        progress: Callable[[int, int], None] = lambda done, total: None,
        start: bool = True,
    ) -> str:
        created = self.call("POST", "/jobs", spec)
        upload = created["upload"]
        if len(weights) != upload["weights_bytes"]:
            raise ApiError(400, f"initial weights are {len(weights)} bytes; the model needs {upload['weights_bytes']}")
        post_form(upload["weights"], weights)
        total = upload["batches_expected"]
        for index, data in enumerate(batches):
            if len(data) != upload["batch_bytes"]:
                raise ApiError(
                    400, f"batch {index} is {len(data)} bytes; the job's layout needs {upload['batch_bytes']}"
                )
            if upload["batch_encoding"] == "gzip":
                data = gzip.compress(data, mtime=0)
            post_form(upload["batches"], data, key=f"{upload['batch_key_prefix']}batch-{index:06d}.bin")
            progress(index + 1, total)
        if start:
            self.call("POST", f"/jobs/{created['job_id']}/start")
        return created["job_id"]


def post_form(form: dict[str, Any], data: bytes, key: str | None = None, check: bool = True) -> requests.Response:
    """Upload through a presigned POST form, as a browser would; with `check`,
    a refused upload is an ApiError."""
    fields = dict(form["fields"])
    if key is not None:
        fields["key"] = key
    reply = requests.post(form["url"], data=fields, files={"file": ("blob", data)}, timeout=300)
    if check and reply.status_code not in (200, 201, 204):
        raise ApiError(reply.status_code, f"upload refused: {reply.text[:300]}")
    return reply
