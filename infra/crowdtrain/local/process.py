"""`crowdtrain local` as a child process, for tests and benchmarks that need
real HTTP, a real moto server and real browsers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

from crowdtrain.api import Api
from crowdtrain.jobs.charlstm import CharLSTM
from crowdtrain.jobs.corpus import kjv_text

CLI = Path(sys.executable).parent / "crowdtrain"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive either
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


class LocalCloudProcess:
    def __init__(self, workdir: Path, *options: str):
        """`crowdtrain local` with `options` (default: no demo job)."""
        self.workdir = workdir
        options = options or ("--no-demo",)
        ready_key = "web" if "--no-demo" in options else "demo_job"
        self.log = open(workdir / "local.log", "w")
        self.proc = subprocess.Popen(
            [str(CLI), "local", "--api-port", "0", "--web-port", "0", "--status-every", "0", *options],
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        state = workdir / ".crowdtrain" / "local.json"
        deadline = time.monotonic() + 120
        while not state.exists() or ready_key not in json.loads(state.read_text() or "{}"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"local stack did not start:\n{(workdir / 'local.log').read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(0.5)
        self.state: dict[str, Any] = json.loads(state.read_text())
        self.api = Api(self.state["api"], self.state["admin_token"])
        self.web = self.state["web"]
        aws = dict(
            endpoint_url=self.state["aws_endpoint"],
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        self.s3 = boto3.client("s3", **aws)
        self.table = boto3.resource("dynamodb", **aws).Table("crowdtrain-local")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a `crowdtrain` command against this stack."""
        # `--option=value`: a value that starts with "-" (a token may) is not read as an option
        proc = subprocess.run(
            [str(CLI), f"--api={self.state['api']}", f"--admin-token={self.state['admin_token']}", *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"crowdtrain {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def char_lstm_job(
        self,
        batches: int,
        epochs: int,
        k: int = 1,
        codec: str = "fp32",
        seq_len: int = 20,
        batch_size: int = 16,
        units=(10, 10),
        learning_rate: float = 0.01,
        seed: int = 0,
        staleness: int = 8,
        micro_batch: int | None = None,
        lease_seconds: int = 60,
        embedding: int = 0,
        held_out: int = 0,
        **extra: Any,
    ) -> str:
        """A char-LSTM job over HTTP, with `held_out` batches checked at every version."""
        model = CharLSTM(units=tuple(units), seq_len=seq_len, batch_size=batch_size, embedding=embedding)
        x, y = model.batches(kjv_text("gen1:1-gen3:24"), batches + held_out, seed=seed)
        if held_out:
            extra["evaluation"] = {"batches": held_out, "every": 1, "copies": 1}
        spec = model.job_spec(
            batches,
            micro_batch,
            optimizer={"name": "adam", "learning_rate": learning_rate},
            gradients_per_update=k,
            epochs=epochs,
            codec=codec,
            lease_seconds=lease_seconds,
            staleness=staleness,
            **extra,
        )
        weights = b"".join(w.astype("<f4").tobytes() for w in model.initial_weights(seed))
        return self.api.create_job(spec, weights, (model.batch_file(x[b], y[b]) for b in range(batches + held_out)))

    def wait_for(self, job: str, condition, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.api.call("GET", f"/jobs/{job}")
            if condition(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on {job}: {status}")
            time.sleep(1)

    def stop(self) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            self.log.close()
        return code
