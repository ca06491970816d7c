"""The local stand-in for CloudFront: the built frontend at `/`, the stage's
`config.json`, and `/jobs/*` read from the data bucket (as CloudFront's
`jobs/*` behaviour does through origin access control). Every response
carries the cross-origin isolation headers of the template's response
headers policy, so pages are `crossOriginIsolated` and TF.js's threaded wasm
binary runs. Like CloudFront's standard logs, it can keep an access log:
one line per response, with the body bytes it sent (volunteer pages check
their data meters against it)."""

from __future__ import annotations

import http.server
import json
import mimetypes
import threading
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlparse

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
# The same headers as infra/template.yaml's CrossOriginIsolation policy.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class CrowdServer(http.server.ThreadingHTTPServer):
    """CloudFront takes a crowd's requests at once; a Python server's listen
    backlog of 5 does not. When a synchronous round opened, sixteen Node
    volunteers fetching the new version overflowed it: the kernel dropped
    their connections, retried them seconds later, and a fetch that gave up
    left its task's lease held until it ran out."""

    request_queue_size = 128
    daemon_threads = True


class EdgeServer:
    def __init__(
        self,
        site: Path,
        s3: Any,
        bucket: str,
        config: dict[str, Any],
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: Path | None = None,
    ):
        self.site, self.s3, self.bucket = site, s3, bucket
        self.access_log = open(access_log, "w", buffering=1) if access_log else None  # line-buffered
        self._log_lock = threading.Lock()
        self.config_bytes = json.dumps(config).encode()
        self.server = CrowdServer((host, port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="edge", daemon=True)

    @property
    def url(self) -> str:
        # the bound socket's own address (getsockname): an AF_INET host is a str
        host, port = cast(tuple[str, int], self.server.server_address[:2])
        return f"http://{host}:{port}/"

    def start(self) -> "EdgeServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.access_log:
            self.access_log.close()

    def logged(self, method: str, path: str, status: int, sent: int) -> None:
        """One access-log line: time, method, path, status, body bytes sent (tab-separated)."""
        if self.access_log:
            with self._log_lock:
                self.access_log.write(f"{time.time():.3f}\t{method}\t{path}\t{status}\t{sent}\n")

    def _handler(self) -> type:
        edge = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: the supervisor prints what matters
                pass

            def _send(
                self, status: int, body: bytes, content_type: str, cache: str = "no-cache", encoding: str | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if encoding:  # stored compressed (gzip batch files): served as stored, as CloudFront does
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", cache)
                self.send_header("Access-Control-Allow-Origin", "*")
                for name, value in ISOLATION_HEADERS.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                edge.logged(self.command, urlparse(self.path).path, status, 0 if self.command == "HEAD" else len(body))

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = unquote(urlparse(self.path).path)
                if path == "/config.json":
                    return self._send(200, edge.config_bytes, "application/json", "max-age=60")
                if path.startswith("/jobs/"):
                    return self._object(path[1:])
                return self._file(path)

            def _object(self, key: str) -> None:
                try:
                    obj = edge.s3.get_object(Bucket=edge.bucket, Key=key)
                except edge.s3.exceptions.NoSuchKey:
                    return self._send(404, b"not found", "text/plain")
                self._send(
                    200,
                    obj["Body"].read(),
                    obj.get("ContentType", "application/octet-stream"),
                    obj.get("CacheControl", "no-cache"),
                    obj.get("ContentEncoding"),
                )

            def _file(self, path: str) -> None:
                relative = path.lstrip("/") or "index.html"
                target = (edge.site / relative).resolve()
                if edge.site.resolve() not in target.parents or not target.is_file():
                    return self._send(404, b"not found", "text/plain")
                kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                self._send(200, target.read_bytes(), kind)

        return Handler
