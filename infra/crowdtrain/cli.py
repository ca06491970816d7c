"""`crowdtrain`: run the local stack, create and watch jobs, fetch trained models.

The same commands work against the local stack and against AWS: only the
API URL and the credentials differ (`--api`, `--admin-token`, or AWS
credentials for SigV4). `crowdtrain local` saves its URL and token in
.crowdtrain/local.json, which the other commands read by default.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import requests
from botocore.exceptions import NoCredentialsError

from chalicelib.domain.codecs import CODECS
from chalicelib.domain.optimizers import OPTIMIZERS
from chalicelib.domain.schema import LOSSES
from crowdtrain.api import Api, ApiError
from crowdtrain.aws.deploy import DeployError
from crowdtrain.jobs.check import check_in_tfjs

STATE = Path(".crowdtrain") / "local.json"


def _progress(label: str):
    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _api(args: argparse.Namespace) -> Api:
    url, token = (
        args.api or os.environ.get("CROWDTRAIN_API"),
        args.admin_token or os.environ.get("CROWDTRAIN_ADMIN_TOKEN", ""),
    )
    if not url and STATE.exists():
        saved = json.loads(STATE.read_text())
        url, token = saved["api"], token or saved["admin_token"]
    if not url:
        raise SystemExit("no API URL: pass --api, set CROWDTRAIN_API, or start `crowdtrain local` first")
    return Api(url, token, args.region or "")


# -- job creation -------------------------------------------------------------------
def char_lstm_job(args: argparse.Namespace) -> tuple[dict[str, Any], bytes, Iterator[bytes]]:
    from crowdtrain.jobs.charlstm import CharLSTM

    units, embedding = tuple(args.units), args.embedding
    return _text_job(args, CharLSTM(units=units, seq_len=args.seq_len, batch_size=args.batch_size, embedding=embedding))


def char_transformer_job(args: argparse.Namespace) -> tuple[dict[str, Any], bytes, Iterator[bytes]]:
    """The char-transformer template: char-lstm's text and held-out passage, a causal transformer."""
    from crowdtrain.jobs.chartransformer import CharTransformer

    return _text_job(args, CharTransformer(seq_len=args.seq_len, batch_size=args.batch_size))


def _text_job(args: argparse.Namespace, model: Any) -> tuple[dict[str, Any], bytes, Iterator[bytes]]:
    """A text template's job: batches of --passage, held-out ones of --held-out-passage."""
    from crowdtrain.jobs.corpus import kjv_text

    x, y = model.batches(kjv_text(args.passage), args.batches, seed=args.seed)
    spec = model.job_spec(args.batches, args.micro_batch, **_hyper(args))
    weights = b"".join(w.astype("<f4").tobytes() for w in model.initial_weights(args.seed))
    held = []
    if args.held_out:
        hx, hy = model.batches(kjv_text(args.held_out_passage), args.held_out, seed=args.seed + 1)
        held = [model.batch_file(hx[b], hy[b]) for b in range(len(hx))]
    return (
        spec,
        weights,
        itertools.chain((model.batch_file(x[b], y[b]) for b in range(args.batches)), _held_out(args, spec, held)),
    )


def digits_job(args: argparse.Namespace) -> tuple[dict[str, Any], bytes, Iterator[bytes]]:
    """The digits-cnn template: every whole batch of the training images (the held-out ones never)."""
    from crowdtrain.jobs.digits import DigitsCNN

    model = DigitsCNN(batch_size=args.batch_size)
    (x, y), (hx, hy) = model.split(args.seed)
    xb, yb = model.batches(x, y, args.batches)
    spec = model.job_spec(len(xb), **_hyper(args))
    weights = b"".join(w.astype("<f4").tobytes() for w in model.initial_weights(args.seed))
    held = []
    if args.held_out:
        hxb, hyb = model.batches(hx, hy, args.held_out)
        held = [model.batch_file(hxb[b], hyb[b]) for b in range(len(hxb))]
    return (
        spec,
        weights,
        itertools.chain((model.batch_file(xb[b], yb[b]) for b in range(len(xb))), _held_out(args, spec, held)),
    )


def model_json_job(args: argparse.Namespace) -> tuple[dict[str, Any], bytes, Iterator[bytes]]:
    """A job from a TF.js model.json (its shards beside it) and a folder of batch files."""
    path = Path(args.model)
    if not args.dataset:
        raise SystemExit("crowdtrain: --model needs --dataset, the folder of its batch-NNNNNN.bin files")
    document = _json_file(path, "a TF.js model.json")
    try:
        shards = [p for group in document["weightsManifest"] for p in group["paths"]]
    except (KeyError, TypeError):
        raise SystemExit(f"crowdtrain: {path} is not a TF.js model.json (no weightsManifest with paths)")
    try:
        weights = b"".join((path.parent / shard).read_bytes() for shard in shards)
    except OSError as err:
        raise SystemExit(f"crowdtrain: a weights file of {path} cannot be read: {err.strerror}: {err.filename}")
    files = sorted(Path(args.dataset).glob("batch-*.bin"))
    if not files:
        raise SystemExit(f"crowdtrain: no batch-*.bin files in {args.dataset}")
    dataset = _json_file(Path(args.dataset) / "dataset.json", "the dataset's layout (dataset.json)")
    spec = {
        "name": args.name or path.parent.name,
        "model": document,
        "loss": args.loss,
        "dataset": {"batches": len(files), **dataset},
        **_hyper(args),
    }
    held = [f.read_bytes() for f in sorted(Path(args.dataset).glob("held-out-*.bin"))]
    return spec, weights, itertools.chain((f.read_bytes() for f in files), _held_out(args, spec, held))


def _json_file(path: Path, what: str) -> Any:
    """A JSON file's document, or one line saying why not."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"crowdtrain: {path} not found ({what})")
    except OSError as err:
        raise SystemExit(f"crowdtrain: {path} cannot be read ({what}): {err.strerror}")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemExit(f"crowdtrain: {path} is not JSON ({what}): {err}")


def _held_out(args: argparse.Namespace, spec: dict[str, Any], files: list[bytes]) -> list[bytes]:
    """Held-out batch files, uploaded after the training ones, and the spec's evaluation setting for them."""
    if files:
        spec["evaluation"] = {"batches": len(files), "every": args.evaluate_every, "copies": args.evaluation_copies}
    return files


def _hyper(args: argparse.Namespace) -> dict[str, Any]:
    job_defaults(args)
    optimizer: dict[str, Any] = {"name": args.optimizer}
    if args.learning_rate is not None:
        optimizer["learning_rate"] = args.learning_rate
    if args.optimizer == "momentum":
        optimizer.update(momentum=args.momentum, use_nesterov=args.nesterov)
    hyper = {
        "optimizer": optimizer,
        "gradients_per_update": args.gradients_per_update,
        "staleness": args.staleness,
        "epochs": args.epochs,
        "lease_seconds": args.lease_seconds,
        "codec": args.codec,
        "seed": args.seed,
        "credit": not args.no_credit,
        "synchronous": args.synchronous,
        "priority": args.priority,
    }
    if args.max_share is not None:
        hyper["max_share"] = args.max_share
    if args.fold_groups is not None:  # else the deploy's default, sized for its crowd (crowdtrain deploy --volunteers)
        hyper["fold_groups"] = args.fold_groups
    if args.local_steps:
        hyper["local_steps"] = {
            "steps": args.local_steps,
            "min_steps": args.min_steps or args.local_steps,
            "target_seconds": args.target_seconds,
            "keep_state": args.keep_local_state,
            "decay_to": args.local_decay_to,
            "optimizer": {"name": args.local_optimizer, "learning_rate": args.local_learning_rate},
        }
    return hyper


TEMPLATES = {"char-lstm": char_lstm_job, "char-transformer": char_transformer_job, "digits-cnn": digits_job}


def create(args: argparse.Namespace) -> str:
    make = model_json_job if args.model else TEMPLATES[args.template]
    spec, weights, batches = make(args)  # a file that is not there or not right says so before any request
    if args.name:
        spec["name"] = args.name
    api = _api(args)
    first = next(batches)
    loss = check_in_tfjs(spec, weights, first)
    if loss is not None:
        print(f"TF.js trains the model: loss {loss:.4f} on the first batch", file=sys.stderr)
    batches = itertools.chain([first], batches)
    job = api.create_job(spec, weights, batches, _progress("uploading batches"), start=not args.no_start)
    print(job)
    return job


# -- watching and managing ------------------------------------------------------------
def list_jobs(args: argparse.Namespace) -> None:
    jobs = _api(args).call("GET", "/jobs")["jobs"]
    print("\n".join(json.dumps(job) for job in jobs) if args.json else job_table(jobs))


def total_tasks(spec: dict[str, Any]) -> int:
    """The tasks a job folds in all (batches_done counts them): with local steps, a task is several batches."""
    return int(spec.get("tasks_per_epoch", spec["dataset"]["batches"])) * int(spec["epochs"])


def describe(status: dict[str, Any]) -> str:
    spec = status["spec"]
    total = total_tasks(spec)
    history = status["history"]
    loss = f"{history[-1]['loss']:.4f}" if history else "-"
    eta = "-"
    if len(history) >= 2 and status["status"] == "running":
        span = history[-1]["time"] - history[0]["time"]
        per_batch = span / max(1, status["batches_done"] - 1)
        eta = f"{per_batch * (total - status['batches_done']):.0f}s"
    return (
        f"{status['job_id']} {shown(status['status']):<9} version {status['version']:>5}  epoch "
        f"{status['epoch']}/{spec['epochs']}  tasks {status['batches_done']}/{total}  training loss "
        f"(reported) {loss}{held_out(status)}  volunteers {status['active_volunteers']}  "
        f"discarded {sum(status['discarded'].values())}  eta {eta}"
        + (f"  paused: {status['paused_reason']}" if status.get("paused_reason") else "")
    )


def held_out(status: dict[str, Any]) -> str:
    """The newest held-out figures volunteers agreed on, for `watch`."""
    if not status.get("held_out"):
        return ""
    last = status["held_out"][-1]
    accuracy = "" if last["accuracy"] is None else f" accuracy {100 * last['accuracy']:.1f}%"
    return f"  held-out loss (checked, v{last['version']}) {last['loss']:.4f}{accuracy}"


JOB_COLUMNS = (
    ("job_id", "JOB"),
    ("name", "NAME"),
    ("status", "STATUS"),
    ("version", "VERSION"),
    ("epoch", "EPOCH"),
    ("batches_done", "TASKS"),
    ("pending_gradients", "PENDING"),
)


CREDIT_COLUMNS = (
    ("name", "NAME"),
    ("volunteer_id", "VOLUNTEER"),
    ("credit", "CREDIT"),
    ("results", "RESULTS"),
    ("samples", "SAMPLES"),
)


def table(rows: list[list[str]]) -> str:
    """Rows of cells, aligned; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def credit(args: argparse.Namespace) -> None:
    """`crowdtrain credit JOB`: every identity's credit for folded work, most first."""
    ledger = _api(args).call("GET", f"/jobs/{args.job}/credit")
    volunteers = ledger["volunteers"]
    if args.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([key for key, _ in CREDIT_COLUMNS])
        writer.writerows([[v[key] for key, _ in CREDIT_COLUMNS] for v in volunteers])
        print(out.getvalue(), end="")
        return
    if not volunteers:
        print(f"no credit yet in {args.job}: credit is earned when a volunteer's result is folded")
        return
    print(
        table(
            [[label for _, label in CREDIT_COLUMNS]] + [[str(v[key]) for key, _ in CREDIT_COLUMNS] for v in volunteers]
        )
    )
    print(f"credit: {ledger['unit']}")


def delete(args: argparse.Namespace) -> None:
    """`crowdtrain delete JOB`: the API deletes a bounded page a call; this
    calls until the job is gone, saying how far it got (run it again to go on
    after an interruption)."""
    api, records, files = _api(args), 0, 0
    while True:
        step = api.call("DELETE", f"/jobs/{args.job}")
        records, files = records + step["records"], files + step["files"]
        if step["deleted"]:
            done = {**step, "records": records, "files": files}
            print(json.dumps(done) if args.json else f"deleted {args.job}: {records:,} records and {files:,} files")
            return
        print(f"deleting {args.job}: {records:,} records and {files:,} files so far", file=sys.stderr, flush=True)


def redrive(args: argparse.Namespace) -> None:
    """`crowdtrain redrive JOB [--quarantined]`: dead letters back to their queues; with
    --quarantined, those the redrive gave up on (listed with why) back too, counted afresh."""
    api = _api(args)
    if not args.quarantined:
        done = api.call("POST", f"/jobs/{args.job}/redrive")
        if args.json:
            print(json.dumps(done))
            return
        moved = ", ".join(f"{n} {queue}" for queue, n in done["redriven"].items() if n) or "nothing"
        print(f"sent back to their queues: {moved}")
        if any(done["quarantined"].values()):
            held = ", ".join(f"{n} {queue}" for queue, n in done["quarantined"].items() if n)
            print(f"quarantined (redriven too often): {held}; `crowdtrain redrive --quarantined {args.job}` lists them")
        return
    retried = api.call("POST", f"/jobs/{args.job}/quarantine")["retried"]
    for q in retried:
        print(f"{q['queue']} {q['message_id']}: {q['reason']}\n  {json.dumps(q['message'])}")
    print(f"sent back {len(retried)} quarantined message{'s' * (len(retried) != 1)} of {args.job}")


def shown(status: str) -> str:
    """A job's status for people: the API's "uploading" also covers a job whose upload
    finished but that was not started (`create --no-start`)."""
    return "not started" if status == "uploading" else status


def job_table(jobs: list[dict[str, Any]]) -> str:
    """`crowdtrain jobs`: one aligned row per job, newest first."""
    if not jobs:
        return "no jobs yet: `crowdtrain create` makes one"
    return table(
        [[label for _, label in JOB_COLUMNS]]
        + [
            [shown(job[key]) if key == "status" else str(job[key]) for key, _ in JOB_COLUMNS]
            for job in sorted(jobs, key=lambda j: -j["created"])
        ]
    )


def watch(args: argparse.Namespace) -> None:
    api = _api(args)
    while True:
        status = api.call("GET", f"/jobs/{args.job}")
        print(describe(status), flush=True)
        if status["status"] == "finished" or args.once:
            return
        time.sleep(args.interval)


def download(args: argparse.Namespace) -> None:
    """Fetch a version's model.json and weights (the latest by default) as TF.js files."""
    status = _api(args).call("GET", f"/jobs/{args.job}")
    model_url = status["model_url"]
    if args.version is not None:
        if not 0 <= args.version <= status["version"]:
            raise SystemExit(f"crowdtrain: job {args.job} has versions 0 to {status['version']}, not {args.version}")
        model_url = model_url.rsplit("/", 2)[0] + f"/{args.version:08d}/model.json"
    document = requests.get(model_url, timeout=60)
    if not document.ok:
        raise SystemExit(f"crowdtrain: {model_url} answered {document.status_code}")
    out = Path(args.out)  # made only once there is something to write in it
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_bytes(document.content)
    base = model_url.rsplit("/", 1)[0]
    for group in document.json()["weightsManifest"]:
        for shard in group["paths"]:
            reply = requests.get(f"{base}/{shard}", timeout=300)
            reply.raise_for_status()
            (out / shard).write_bytes(reply.content)
    print(f"{out / 'model.json'} (version {args.version if args.version is not None else status['version']})")


def import_keras(args: argparse.Namespace) -> None:
    """A Keras file (.keras, or .h5 of Keras 3 or 2) -> TF.js layers files a job can start from."""
    from crowdtrain.jobs.keras_files import KerasFileError
    from crowdtrain.jobs.keras_files import import_keras as convert

    try:
        print(convert(Path(args.keras_model), Path(args.out)))
    except (KerasFileError, OSError) as err:
        lines = str(err).splitlines() or [type(err).__name__]
        # one line, or one line per thing the page cannot train
        raise SystemExit(
            f"crowdtrain: cannot import {args.keras_model}: "
            + (lines[0] if len(lines) == 1 else "\n" + "\n".join(f"  {line}" for line in lines))
        )


def export_keras(args: argparse.Namespace) -> None:
    """TF.js layers files (e.g. from `crowdtrain download`) -> a Keras 3 file."""
    from crowdtrain.jobs.keras_files import KerasFileError
    from crowdtrain.jobs.keras_files import export_keras as convert

    try:
        print(convert(Path(args.model), Path(args.out)))
    except (KerasFileError, OSError) as err:
        raise SystemExit(f"cannot export {args.model}: {err}")


# -- the local stack -----------------------------------------------------------------
def own_state() -> tuple[Path, int | None]:
    """Where this `crowdtrain local` keeps its state: .crowdtrain/local.json
    (which the other commands read), unless another running stack holds it
    (then a file of this process's own, and that stack's pid)."""
    from crowdtrain.local.process import alive

    try:
        holder = int(json.loads(STATE.read_text()).get("pid", 0)) if STATE.exists() else 0
    except (ValueError, TypeError, AttributeError):
        holder = 0  # unreadable: not a running stack's
    if holder and holder != os.getpid() and alive(holder):
        return STATE.with_name(f"local-{os.getpid()}.json"), holder
    return STATE, None


def local(args: argparse.Namespace) -> None:
    from crowdtrain.local.cloud import LocalCloud, PortInUse

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    STATE.parent.mkdir(exist_ok=True)
    state, other = own_state()
    log = STATE.parent / ("edge-access.log" if other is None else f"edge-access-{os.getpid()}.log")
    stack = LocalCloud(api_port=args.api_port, web_port=args.web_port, verbose=args.verbose, edge_log=log)
    print("starting moto server, resources, API, dispatcher and web server ...", flush=True)
    swarm = None
    try:
        stack.start()
    except PortInUse as err:
        raise SystemExit(f"crowdtrain local: {err}")
    try:
        STATE.parent.mkdir(exist_ok=True)
        assert stack.moto is not None  # start() started moto_server, or raised
        state.write_text(
            json.dumps(
                {
                    "api": stack.api_url,
                    "web": stack.web_url,
                    "admin_token": stack.admin_token,
                    "aws_endpoint": stack.endpoint,
                    "pid": os.getpid(),
                    "moto_pid": stack.moto.pid,
                }
            )
        )
        print(f"API:            {stack.api_url}\nadmin token:    {stack.admin_token} (saved in {state})")
        if other is not None:
            print(
                f"another `crowdtrain local` (pid {other}) holds {STATE}, which the other commands read: "
                f"reach this one with --api={stack.api_url} --admin-token={stack.admin_token}"
            )
        job = None
        if not args.no_demo:
            args.api, args.admin_token, args.region = stack.api_url, stack.admin_token, ""
            job = create(args)
            state.write_text(json.dumps({**json.loads(state.read_text()), "demo_job": job}))
        print(f"volunteer page: {stack.web_url}")
        print(f"dashboard:      {stack.web_url}dashboard.html" + (f"?job={job}" if job else ""), flush=True)
        if args.volunteers:
            from crowdtrain.local.swarm import Swarm

            swarm = Swarm(stack.web_url, args.volunteers).start()
            print(f"{args.volunteers} headless Chromium volunteers started", flush=True)
        print("Ctrl-C stops everything." + ("" if args.verbose else " (--verbose shows every API request)"), flush=True)
        status = StatusLine(sys.stdout)
        try:
            while not stopping.wait(args.status_every or 3600):
                if job and args.status_every:
                    status.show(describe(Api(stack.api_url, stack.admin_token).call("GET", f"/jobs/{job}")))
        finally:
            status.end()
            if swarm:
                swarm.stop()
    finally:
        stack.stop()
        try:  # its own state only: never a file another stack took over meanwhile
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass
    print("stopped", flush=True)


class StatusLine:
    """The demo job's status: rewritten in place on a terminal, so it stays the
    last thing on screen; one line per update elsewhere (logs, pipes)."""

    def __init__(self, out: Any):
        self.out, self.in_place, self.shown = out, out.isatty(), False

    def show(self, text: str) -> None:
        self.out.write(f"\r\033[K{text}" if self.in_place else f"{text}\n")
        self.out.flush()
        self.shown = True

    def end(self) -> None:
        if self.in_place and self.shown:
            self.out.write("\n")
            self.out.flush()


# -- AWS --------------------------------------------------------------------------------
def aws_session(args: argparse.Namespace) -> Any:
    """A boto3 session in --region, else AWS_REGION (which boto3 itself does not read), else AWS_DEFAULT_REGION
    or the profile's."""
    import boto3

    region = args.region or os.environ.get("AWS_REGION")
    return boto3.Session(region_name=region) if region else boto3.Session()


def deploy(args: argparse.Namespace) -> None:

    from crowdtrain.aws.deploy import Deployer

    session = aws_session(args)
    from crowdtrain.aws.sizing import Sizing

    sizing = Sizing.for_crowd(args.volunteers, args.task_seconds) if args.volunteers is not None else None
    deployer = Deployer(session, args.stage, alarm_email=args.alarm_email)
    url = deployer.deploy(args.rate_limit, args.burst_limit, sizing)
    print(f"\nvolunteers visit {url}")


def plan(args: argparse.Namespace) -> None:
    """`crowdtrain plan --volunteers N`: what a deploy for N volunteers sets, and the quotas it needs."""
    from crowdtrain.aws.sizing import Sizing

    s = Sizing.for_crowd(args.volunteers, args.task_seconds)
    print(s.summary())
    rows = [["QUOTA", "NEEDS", "AWS DEFAULT", ""]]
    for name, need, default in s.needs():
        rows.append([name, f"{need:,}", f"{default:,}", "raise it first" * (need > default)])
    print(table(rows))


def positive(kind: type) -> Any:
    """An argparse type: a number of `kind` above zero, or a one-line error."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}")
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


def stage_name(text: str) -> str:
    """A --stage: lower-case letters, digits and hyphens, short enough that a
    job's task queue (crowdtrain-STAGE-tasks-j-<12 hex>) keeps within SQS's 80 characters."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", text):
        raise argparse.ArgumentTypeError(f"a stage is 1-40 lower-case letters, digits and hyphens: {text!r}")
    return text


def email_address(text: str) -> str:
    """An --alarm-email value: an address, or "" (none)."""
    if text and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise argparse.ArgumentTypeError(f"not an e-mail address: {text!r}")
    return text


def rotate_secret(args: argparse.Namespace) -> None:

    from crowdtrain.aws.deploy import Deployer

    session = aws_session(args)
    Deployer(session, args.stage).rotate_secret()


def teardown(args: argparse.Namespace) -> None:

    from crowdtrain.aws.deploy import Deployer

    session = aws_session(args)
    Deployer(session, args.stage).teardown(delete_data=args.delete_data)


# -- argument parsing ------------------------------------------------------------------
# Job settings by name; explicit options win over a preset's.
PRESETS = {
    # JSDoop 1.0's experiment (docs/jsdoop.md): LSTM(50) x 2 over sequences of
    # 40, map tasks of 8 sequences, 16 gradients per update, RMSprop 0.001,
    # fully synchronous (a round's 16 tasks are leased on its version, the
    # next wait for the update; a result on an older version is discarded).
    "jsdoop": {
        "units": [50, 50],
        "seq_len": 40,
        "batch_size": 8,
        "gradients_per_update": 16,
        "staleness": 0,
        "synchronous": True,
        "optimizer": "rmsprop",
        "learning_rate": 0.001,
        "local_steps": 0,  # a gradient per task, sent whole
        "codec": "fp32",
    },
}
# Local steps a task runs where --local-steps is not given, per template (a
# --model job: char-lstm's). Measured, with why: docs/benchmarks.md#defaults.
TEMPLATE_STEPS = {"char-lstm": 32, "char-transformer": 16, "digits-cnn": 8}


def job_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the options whose defaults depend on others: local steps by
    template; with them, the outer update is their moves summed (SGD at rate
    1), each volunteer keeps its optimizer's state, and moves travel in fp16;
    a gradient per task (--local-steps 0) folds with Adam at 0.01, in fp32."""
    if args.local_steps is None:
        args.local_steps = TEMPLATE_STEPS.get(args.template, TEMPLATE_STEPS["char-lstm"])
    local = args.local_steps > 0
    if args.optimizer is None:
        args.optimizer = "sgd" if local else "adam"
    if args.learning_rate is None:
        args.learning_rate = 1.0 if local and args.optimizer == "sgd" else 0.01
    if args.codec is None:
        args.codec = "fp16" if local else "fp32"
    return args


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named setup (jsdoop: the paper's experiment, docs/jsdoop.md); other options override it",
    )
    parser.add_argument(
        "--template",
        default="char-lstm",
        choices=sorted(TEMPLATES),
        help="char-lstm: next character of KJV text; char-transformer: the same text, a small causal "
        "transformer (2 blocks of attention, width 64) trained on every position's next character; "
        "digits-cnn: Conv2D on scikit-learn's 8x8 digits "
        "(.venv/bin/pip install -e '.[digits]'; --batches caps its 46 batches of 32)",
    )
    parser.add_argument("--model", help="a TF.js model.json (shards beside it) instead of a template")
    parser.add_argument("--dataset", help="with --model: folder of batch-NNNNNN.bin files and dataset.json")
    parser.add_argument(
        "--loss",
        default="sparseCategoricalCrossentropy",
        choices=LOSSES,
        help="the loss volunteers train on, by TF.js's name (import-keras does not carry a Keras file's loss)",
    )
    parser.add_argument("--name")
    parser.add_argument(
        "--units",
        type=int,
        nargs="+",
        default=[128],
        help="LSTM layer sizes (default: one LSTM(128), which learns word-like text in minutes; "
        "the paper's stand-alone example: 10 10)",
    )
    parser.add_argument("--seq-len", type=int, default=40, help="characters per sequence (paper: 1024)")
    parser.add_argument(
        "--embedding",
        type=int,
        default=0,
        help="E > 0: read characters through a learned Embedding of E dimensions instead of one-hot "
        "(no text sample on the page; wasm cannot train it, so the page's canary picks another "
        "backend)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument(
        "--micro-batch",
        type=int,
        help="volunteers compute each batch this many sequences at a time (local accumulation)",
    )
    parser.add_argument(
        "--passage",
        default="gen1:1-jude1:25",
        help="KJV passage for the corpus (default: all but Revelation, left for held-out checks)",
    )
    parser.add_argument(
        "--held-out",
        type=int,
        default=0,
        help="N > 0: N held-out batches (char-lstm: of --held-out-passage; digits-cnn: of the images "
        "never trained on; --model: the dataset folder's held-out-NNNNNN.bin files) whose loss "
        "volunteers check every --evaluate-every versions",
    )
    parser.add_argument("--held-out-passage", default="rev1:1-rev22:21", help="KJV passage of the held-out batches")
    parser.add_argument("--evaluate-every", type=int, default=10, help="versions between held-out checks")
    parser.add_argument(
        "--evaluation-copies",
        type=int,
        default=2,
        help="volunteers who must agree on a held-out figure before it is shown (1 trusts one)",
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "-k",
        "--gradients-per-update",
        type=int,
        default=1,
        help="gradients folded into each update, K (paper's stand-alone example: 3)",
    )
    parser.add_argument("--staleness", type=int, default=4)
    parser.add_argument(
        "--max-share",
        type=float,
        help="the largest share of one update one identity (or address) may give, 0.01-1 (default: all of it "
        "under the mean, a quarter under a robust rule); below 1 it needs --fold-groups 1, and with "
        "--synchronous a round seats each client in at most its share",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=1,
        help="the job's share of the volunteers beside other running jobs (1-100; priority 2 gets twice "
        "the tasks of priority 1)",
    )
    parser.add_argument(
        "--synchronous",
        action="store_true",
        help="fold in rounds: K tasks are leased on a version and the next wait for its update, so "
        "every result is computed on the version it updates (JSDoop 1.0's mode; with "
        "--local-steps, FedAvg's and DiLoCo's rounds when K is the crowd's size)",
    )
    parser.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        help="the fold's optimizer (with local steps, the outer one; default: sgd with local steps, else adam)",
    )
    parser.add_argument(
        "--learning-rate", type=float, help="the fold's (default: 1 for sgd over local steps, else 0.01)"
    )
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument(
        "--nesterov", action="store_true", help="with --optimizer momentum: Nesterov's (DiLoCo's outer)"
    )
    parser.add_argument(
        "--local-steps",
        type=int,
        help="H: each task runs H optimizer steps on H batches in the browser and uploads the change "
        "(the fold's --optimizer becomes the outer one; default: 32, digits-cnn 8); 0: one gradient per task",
    )
    parser.add_argument(
        "--local-optimizer",
        default="adam",
        choices=sorted(OPTIMIZERS),
        help="the volunteers' own optimizer for local steps (TF.js's)",
    )
    parser.add_argument("--local-learning-rate", type=float, default=0.01)
    parser.add_argument(
        "--min-steps",
        type=int,
        default=0,
        help="with --local-steps H: each volunteer trains on between this many and H of a task's "
        "batches, as many as fit --target-seconds on its device; results weigh by their steps "
        "(0: always H)",
    )
    parser.add_argument(
        "--target-seconds",
        type=float,
        default=20.0,
        help="with --min-steps: about how long a volunteer's task should take",
    )
    parser.add_argument(
        "--local-decay-to",
        type=float,
        default=1.0,
        metavar="FRACTION",
        help="with --local-steps: the local learning rate falls along a cosine over the job to this "
        "fraction of it (default 1: constant)",
    )
    parser.add_argument(
        "--keep-local-state",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --local-steps: each volunteer keeps its local optimizer's state across its tasks "
        "(DiLoCo's inner state; with the default sgd at 1 and -k 1, one volunteer then trains exactly "
        "like one process) instead of starting it fresh each task",
    )
    parser.add_argument("--lease-seconds", type=int, default=120)
    parser.add_argument(
        "--fold-groups",
        type=int,
        help="G > 1 folds the job's results in G message groups at once, then sums their sums "
        "(a job of thousands of volunteers; mean or clipped_mean only: docs/scale.md)",
    )
    parser.add_argument(
        "--codec", choices=sorted(CODECS), help="how results travel (default: fp16 with local steps, else fp32)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-start", action="store_true", help="upload but do not start the job")
    parser.add_argument(
        "--no-credit", action="store_true", help="a job without points: no credit for volunteers and no leaderboard"
    )


class TopParser(argparse.ArgumentParser):
    """crowdtrain's parser, with its subcommands' parsers by name: every one
    (`commands`), and those that take a job's options and so a --preset (`job_commands`)."""

    commands: dict[str, argparse.ArgumentParser]
    job_commands: dict[str, argparse.ArgumentParser]


def parser() -> TopParser:
    top = TopParser(prog="crowdtrain", description=__doc__.splitlines()[0])
    top.add_argument("--api", help="API URL (default: $CROWDTRAIN_API or the running local stack)")
    top.add_argument("--admin-token", help="bearer token (local stack); without it, AWS SigV4 is used")
    top.add_argument(
        "--region",
        help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the profile's); "
        "also accepted after the subcommand",
    )
    sub = top.add_subparsers(dest="command", required=True, parser_class=argparse.ArgumentParser)  # plain ones

    p = sub.add_parser("local", help="run everything locally on moto server, with a demo job")
    _job_options(p)
    top.job_commands = {"local": p}
    p.add_argument("--no-demo", action="store_true")
    p.add_argument("--volunteers", type=int, default=0, help="headless Chromium volunteers to start")
    p.add_argument("--api-port", type=int, default=8000, help="the API's port (0: any free one)")
    p.add_argument("--web-port", type=int, default=8080, help="the pages' port (0: any free one)")
    p.add_argument("--verbose", action="store_true", help="print every API request (the access log)")
    p.add_argument("--status-every", type=float, default=10, help="print the demo job's status every N s (0: never)")
    # the demo checks its held-out loss every 10 versions (tasks of 32 local steps); one volunteer's
    # answer is shown (a demo has one)
    p.set_defaults(func=local, held_out=4, evaluate_every=10, evaluation_copies=1)

    p = sub.add_parser("create", help="create (and start) a job")
    _job_options(p)
    top.job_commands["create"] = p
    p.set_defaults(func=create)

    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--json", action="store_true", help="one JSON object per job instead of a table")
    p.set_defaults(func=list_jobs)

    p = sub.add_parser("watch", help="follow a job: version, loss, volunteers, ETA")
    p.add_argument("job")
    p.add_argument("--interval", type=float, default=5)
    p.add_argument("--once", action="store_true")
    p.set_defaults(func=watch)

    for verb in ("start", "pause", "resume"):
        p = sub.add_parser(verb, help=f"{verb} a job")
        p.add_argument("job")
        p.set_defaults(func=lambda a, v=verb: print(_api(a).call("POST", f"/jobs/{a.job}/{v}")["status"]))

    p = sub.add_parser("credit", help="every volunteer's credit for folded work in a job, most first")
    p.add_argument("job")
    p.add_argument("--csv", action="store_true", help="CSV instead of a table")
    p.set_defaults(func=credit)

    p = sub.add_parser("redrive", help="send a job's dead-lettered tasks and results back to their queues")
    p.add_argument("job")
    p.add_argument(
        "--quarantined", action="store_true", help="list the messages redriven too often, and send them back"
    )
    p.add_argument("--json", action="store_true", help="the API's answer as JSON instead of a line")
    p.set_defaults(func=redrive)

    p = sub.add_parser("delete", help="delete a job and its files")
    p.add_argument("job")
    p.add_argument("--json", action="store_true", help="what was deleted as JSON instead of a line")
    p.set_defaults(func=delete)

    p = sub.add_parser("download", help="download a job's model as TF.js files")
    p.add_argument("job")
    p.add_argument("out")
    p.add_argument("--version", type=int)
    p.set_defaults(func=download)

    p = sub.add_parser("deploy", help="deploy a stage to AWS: stack, app, frontend, CloudFront")
    p.add_argument("--stage", type=stage_name, default="dev")
    p.add_argument(
        "--volunteers",
        type=positive(int),
        help="size the stage for this many volunteers at once: the API's throttle and burst, the fold's reserved "
        "concurrency and the default fold groups, checked against the account's quotas before anything is made",
    )
    p.add_argument(
        "--task-seconds",
        type=positive(float),
        default=15.0,
        help="how long a volunteer's task takes, for --volunteers (the paper's model: about 15 s)",
    )
    p.add_argument(
        "--rate-limit", type=positive(float), help="API requests per second, stage-wide (100; --volunteers sizes it)"
    )
    p.add_argument("--burst-limit", type=positive(int), help="API burst (200; --volunteers sizes it)")
    p.add_argument(
        "--alarm-email",
        type=email_address,
        help="e-mail the stack's alarms (dead letters staying, the fold failing) to this address; "
        "AWS asks it to confirm. Kept by later deploys; --alarm-email '' removes it",
    )
    p.set_defaults(func=deploy)

    p = sub.add_parser("plan", help="what `deploy --volunteers N` would set, and the account quotas it needs")
    p.add_argument("--volunteers", type=positive(int), required=True)
    p.add_argument("--task-seconds", type=positive(float), default=15.0, help="a volunteer's task (15 s: the paper's)")
    p.set_defaults(func=plan)

    p = sub.add_parser("rotate-secret", help="rotate a stage's lease secret (leases signed before still complete)")
    p.add_argument("--stage", type=stage_name, default="dev")
    p.set_defaults(func=rotate_secret)

    p = sub.add_parser("teardown", help="delete a stage from AWS: app, site, stack; the data is kept")
    p.add_argument("--stage", type=stage_name, default="dev")
    p.add_argument("--delete-data", action="store_true", help="also delete the data bucket and the table")
    p.set_defaults(func=teardown)

    p = sub.add_parser("import-keras", help="a Keras .keras/.h5 file -> TF.js files (needs the keras extra)")
    p.add_argument("keras_model", help="a Keras 3 .keras or .h5 file, or a Keras 2 .h5")
    p.add_argument("out", help="folder for model.json and weights.bin")
    p.set_defaults(func=import_keras)

    p = sub.add_parser("export-keras", help="TF.js files -> a Keras 3 .keras/.h5 file (needs the keras extra)")
    p.add_argument("model", help="a model.json (its weights beside it), e.g. from `crowdtrain download`")
    p.add_argument("out", help="the Keras file to write: .keras (Keras 3's format) or .h5")
    p.set_defaults(func=export_keras)
    top.commands = sub.choices
    for command in top.commands.values():  # `crowdtrain deploy --region eu-west-1` as well as before the subcommand
        command.add_argument("--region", default=argparse.SUPPRESS, help="AWS region (as before the subcommand)")
    return top


def main(argv: list[str] | None = None) -> None:
    top = parser()
    args = top.parse_args(argv)
    if getattr(args, "preset", None):  # parse again with the preset as the defaults: explicit options win
        top.job_commands[args.command].set_defaults(**PRESETS[args.preset])
        args = top.parse_args(argv)
    try:
        args.func(args)
    except (ApiError, DeployError) as err:
        raise SystemExit(f"crowdtrain: {err}")
    except requests.ConnectionError as err:
        raise SystemExit(f"crowdtrain: cannot reach the API: {err}")
    except NoCredentialsError:
        raise SystemExit(
            "crowdtrain: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(docs/deploy.md)"
        )
    except KeyboardInterrupt:  # Ctrl-C: stopped as asked, no traceback (130: by SIGINT, as shells count it)
        print(file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    main()
