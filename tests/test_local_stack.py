"""The local stack as a newcomer uses it: `crowdtrain local` with headless
Chromium volunteers, and the operator CLI against it."""

import io
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests

from chalicelib.domain.models import parse_model
from chalicelib.domain.weights import decode_tensors
from chalicelib.store.foldlog import FoldLogStore
from chalicelib.store.meta import MetaStore
from chalicelib.store.objects import IMMUTABLE
from crowdtrain.api import ApiError
from crowdtrain.cli import StatusLine, job_table
from crowdtrain.local.edge import EdgeServer
from crowdtrain.local.process import CLI, LocalCloudProcess, alive
from tests.harness import Dataset, lease_items, softmax_topology

needs_chromium = pytest.mark.skipif(not shutil.which("/usr/bin/chromium"), reason="needs Debian's chromium")


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return [pid for pid in found if alive(pid)]


@needs_chromium
def test_two_browser_volunteers_train_the_demo_job_then_everything_stops(tmp_path):
    stack = LocalCloudProcess(
        tmp_path,
        "--volunteers",
        "2",
        "--seq-len",
        "20",
        "--batch-size",
        "16",
        "--batches",
        "6",
        "--epochs",
        "4",
        "--gradients-per-update",
        "2",
        "--passage",
        "gen1:1-gen3:24",
        "--learning-rate",
        "0.02",
        "--local-steps",
        "0",
    )
    try:
        job = stack.state["demo_job"]
        status = stack.wait_for(job, lambda s: s["status"] == "finished", timeout=240)
        assert {seen.rsplit(".", 1)[0] for seen in swarm_seen(stack, job)} == {"swarm-1", "swarm-2"}
    finally:
        moto_pid, stack_pid = stack.state["moto_pid"], stack.proc.pid
        code = stack.stop()
    assert code == 0
    assert not alive(moto_pid) and not alive(stack_pid)
    assert processes_mentioning("crowdtrain-swarm-") == [], "Chromium outlived the local stack"
    assert status["version"] == 4 * 3 and status["batches_done"] == 24
    losses = [h["loss"] for h in status["history"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    log = (tmp_path / "local.log").read_text()
    assert "Ctrl-C stops everything" in log
    # two pages polled the API for minutes: none of it reaches the terminal without --verbose
    assert "POST /tasks/lease" not in log and "GET /progress" not in log, log[-2000:]


def test_a_taken_port_is_named_with_the_option_that_moves_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [str(CLI), "local", "--no-demo", "--api-port", str(port), "--web-port", "0"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"port {port} for the API is taken" in proc.stderr and "--api-port" in proc.stderr, proc.stderr
    assert not (tmp_path / ".crowdtrain" / "local.json").exists()


def swarm_seen(stack, job):
    """Volunteer ids (issued: the page's name, a dot, random hex) that held leases of the job."""
    items = lease_items(stack.table, job)
    folds = FoldLogStore(stack.table).folds(MetaStore(stack.table).get(job))
    pairs = [(e, b) for e, b, _ in folds]
    assert len(pairs) == len(set(pairs)) == 24, "a batch was folded twice or not at all"
    return {item["volunteer_id"] for item in items}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    process = LocalCloudProcess(tmp_path_factory.mktemp("cli"))
    yield process
    assert process.stop() == 0


def test_the_local_clouds_moto_server_is_the_one_with_dynamodbs_atomic_writes(stack):
    """tests/test_atomic_writes.py shows what the wrapper keeps; this, that the local cloud runs it."""
    cmdline = Path(f"/proc/{stack.state['moto_pid']}/cmdline").read_bytes().split(b"\0")
    assert b"crowdtrain.local.moto_server" in cmdline, cmdline


def test_the_edge_server_queues_a_crowds_connections_instead_of_dropping_them(tmp_path):
    """64 volunteers connecting while the edge server accepts none (not started here; busy, in a run): the
    kernel completes every handshake and queues it, as CloudFront would take them, instead of dropping
    all but 6 (a backlog of 5) to be retried seconds later."""
    edge = EdgeServer(tmp_path, None, "bucket", {})
    clients = [socket.socket() for _ in range(64)]
    try:
        for client in clients:
            client.setblocking(False)
            client.connect_ex(edge.server.server_address[:2])
        deadline, connected = time.monotonic() + 0.5, set()
        while len(connected) < len(clients) and time.monotonic() < deadline:
            _, writable, _ = select.select([], [c for c in clients if c not in connected], [], 0.05)
            connected.update(c for c in writable if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        assert len(connected) == len(clients)
    finally:
        for client in clients:
            client.close()
        edge.server.server_close()


def test_cli_creates_watches_pauses_downloads_and_deletes(stack, tmp_path):
    created = stack.cli(
        "create",
        "--units",
        "10",
        "10",
        "--seq-len",
        "12",
        "--batch-size",
        "4",
        "--batches",
        "3",
        "--epochs",
        "1",
        "--passage",
        "gen1:1-gen1:31",
        "--no-start",
    )
    job = created.stdout.strip().splitlines()[-1]
    assert job.startswith("j-") and "uploading batches [" in created.stderr and "3/3" in created.stderr
    jobs = [json.loads(line) for line in stack.cli("jobs", "--json").stdout.splitlines()]
    assert {"job_id": job, "status": "uploading"}.items() <= next(j for j in jobs if j["job_id"] == job).items()
    header, *rows = stack.cli("jobs").stdout.splitlines()
    assert header.split()[:3] == ["JOB", "NAME", "STATUS"]
    assert any(row.startswith(job) and " not started " in row for row in rows), rows  # uploaded, not started
    assert stack.cli("start", job).stdout.strip() == "running"
    # batch files keep the Cache-Control their upload form pinned: immutable, as versions are
    served = requests.head(f"{stack.web}jobs/{job}/data/batch-000000.bin", timeout=10)
    assert served.headers["Cache-Control"] == IMMUTABLE and served.headers["Content-Encoding"] == "gzip"
    line = stack.cli("watch", job, "--once").stdout
    assert (
        job in line and "running" in line and "version     0" in line and "tasks 0/1" in line
    )  # its 3 batches are one task (local steps)
    assert stack.cli("pause", job).stdout.strip() == "paused"
    assert stack.cli("resume", job).stdout.strip() == "running"

    out = tmp_path / "model"
    stack.cli("download", job, str(out))
    _, specs = parse_model(json.loads((out / "model.json").read_text()), 10**7)
    weights = decode_tensors(specs, (out / "weights.bin").read_bytes())
    assert specs[0].name == "lstm_1/kernel" and weights[0].shape == (128, 40)

    deleted = stack.cli("delete", job).stdout  # a line for people (--json for machines)
    assert deleted.startswith(f"deleted {job}: ") and " records and " in deleted, deleted
    gone = stack.cli("watch", job, "--once", check=False)
    assert gone.returncode != 0 and "404" in gone.stderr


def test_cli_creates_a_job_from_a_tfjs_model_json(stack, tmp_path):
    ds = Dataset.generate(batches=2, batch_size=4)
    folder = tmp_path / "softmax"
    folder.mkdir()
    specs = [
        {"name": "dense/kernel", "shape": [4, 3], "dtype": "float32"},
        {"name": "dense/bias", "shape": [3], "dtype": "float32"},
    ]
    (folder / "model.json").write_text(
        json.dumps(
            {
                "format": "layers-model",
                "modelTopology": softmax_topology(4, 3),
                "weightsManifest": [{"paths": ["w.bin"], "weights": specs}],
            }
        )
    )
    (folder / "w.bin").write_bytes(np.zeros(15, "<f4").tobytes())
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(
        json.dumps({"x": {"shape": [4, 4], "dtype": "float32"}, "y": {"shape": [4], "dtype": "int32"}})
    )
    for b in range(2):
        (data / f"batch-{b:06d}.bin").write_bytes(ds.batch_bytes(b))
    job = (
        stack.cli(
            "create",
            "--model",
            str(folder / "model.json"),
            "--dataset",
            str(data),
            "--name",
            "softmax",
            "--optimizer",
            "sgd",
            "--learning-rate",
            "0.1",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    status = stack.api.call("GET", f"/jobs/{job}")
    assert status["status"] == "running" and status["spec"]["dataset"]["batches"] == 2
    assert status["spec"]["optimizer"] == {"name": "sgd", "learning_rate": 0.1}


def model_folders(tmp_path, topology: dict, features: int):
    """A model.json folder and a dataset folder of 2 batches of 4 samples with `features` each."""
    folder, data = tmp_path / "model", tmp_path / "data"
    folder.mkdir()
    data.mkdir()
    specs = [
        {"name": "dense/kernel", "shape": [4, 3], "dtype": "float32"},
        {"name": "dense/bias", "shape": [3], "dtype": "float32"},
    ]
    (folder / "model.json").write_text(
        json.dumps(
            {
                "format": "layers-model",
                "modelTopology": topology,
                "weightsManifest": [{"paths": ["w.bin"], "weights": specs}],
            }
        )
    )
    (folder / "w.bin").write_bytes(np.zeros(15, "<f4").tobytes())
    ds = Dataset.generate(batches=2, batch_size=4, features=features)
    (data / "dataset.json").write_text(
        json.dumps({"x": {"shape": [4, features], "dtype": "float32"}, "y": {"shape": [4], "dtype": "int32"}})
    )
    for b in range(2):
        (data / f"batch-{b:06d}.bin").write_bytes(ds.batch_bytes(b))
    return folder / "model.json", data


def keras3_topology(features: int) -> dict:
    """What Keras 3 writes: an InputLayer with batch_shape, which TF.js 4.22 cannot load."""
    topology = softmax_topology(features, 3)
    dense = topology["config"]["layers"][0]
    del dense["config"]["batch_input_shape"]
    topology["config"]["layers"] = [
        {"class_name": "InputLayer", "config": {"name": "input", "batch_shape": [None, features], "dtype": "float32"}},
        dense,
    ]
    return topology


@pytest.mark.parametrize(
    "case, topology, features, error",
    [
        ("the data has 5 features, the model takes 4", softmax_topology(4, 3), 5, "TF.js cannot train this model"),
        ("a Keras 3 InputLayer", keras3_topology(4), 4, "batchInputShape"),
    ],
)
def test_cli_refuses_a_model_tfjs_cannot_train_before_uploading_anything(
    stack, tmp_path, case, topology, features, error
):
    before = stack.cli("jobs", "--json").stdout
    model, data = model_folders(tmp_path, topology, features)
    refused = stack.cli("create", "--model", str(model), "--dataset", str(data), check=False)
    assert refused.returncode != 0 and error in refused.stderr, (case, refused.stderr)
    assert stack.cli("jobs", "--json").stdout == before  # no job was made


def test_the_api_refuses_a_keras_3_input_layer(stack, tmp_path):
    model, data = model_folders(tmp_path, keras3_topology(4), 4)
    spec = {
        "name": "keras3",
        "model": json.loads(model.read_text()),
        "dataset": {"batches": 2, **json.loads((data / "dataset.json").read_text())},
    }
    with pytest.raises(ApiError) as refused:
        stack.api.create_job(spec, np.zeros(15, "<f4").tobytes(), [])
    assert refused.value.status == 400 and "batch_shape" in str(refused.value)


def test_the_jsdoop_preset_sets_up_the_papers_experiment(stack):
    job = (
        stack.cli("create", "--preset", "jsdoop", "--batches", "4", "--passage", "gen1:1-gen1:31", "--no-start")
        .stdout.strip()
        .splitlines()[-1]
    )
    spec = stack.api.call("GET", f"/jobs/{job}")["spec"]
    assert [w["shape"] for w in spec["weights"]][:2] == [[128, 200], [50, 200]]  # LSTM(50): 4 gates x 50
    assert spec["dataset"]["x"]["shape"] == [8, 40] and spec["gradients_per_update"] == 16
    assert spec["staleness"] == 0 and spec["synchronous"] is True and spec["optimizer"]["name"] == "rmsprop"
    assert spec["optimizer"]["learning_rate"] == 0.001
    assert "local_steps" not in spec and spec["codec"] == "fp32"  # a gradient per task, as the paper's
    explicit = (
        stack.cli(
            "create",
            "--preset",
            "jsdoop",
            "--staleness",
            "3",
            "--batches",
            "2",
            "--passage",
            "gen1:1-gen1:31",
            "--no-start",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert stack.api.call("GET", f"/jobs/{explicit}")["spec"]["staleness"] == 3  # an explicit option wins


def test_cli_reports_api_errors_plainly(stack):
    wrong = stack.cli("--admin-token", "nope", "jobs", check=False)
    assert wrong.returncode != 0 and "crowdtrain: 401" in wrong.stderr and "Traceback" not in wrong.stderr
    missing = stack.cli("watch", "j-000000000000", "--once", check=False)
    assert missing.returncode != 0 and "404: no job j-000000000000" in missing.stderr
    # with no --api, no $CROWDTRAIN_API and no running local stack, the CLI says what to do
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROWDTRAIN_")}
    lost = subprocess.run([str(CLI), "jobs"], cwd=stack.workdir.parent, capture_output=True, text=True, env=env)
    assert lost.returncode != 0 and "no API URL" in lost.stderr


def test_the_status_line_stays_in_place_on_a_terminal_and_is_one_line_each_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for out in (terminal, pipe):
        line = StatusLine(out)
        line.show("version 1")
        line.show("version 2")
        line.end()
    assert terminal.getvalue() == "\r\033[Kversion 1\r\033[Kversion 2\n"
    assert pipe.getvalue() == "version 1\nversion 2\n"


def test_jobs_are_listed_newest_first_in_aligned_columns():
    jobs = [
        {
            "job_id": "j-1",
            "name": "old",
            "status": "finished",
            "version": 12,
            "epoch": 3,
            "batches_done": 180,
            "pending_gradients": 0,
            "created": 1.0,
        },
        {
            "job_id": "j-22",
            "name": "char-lstm 10x10",
            "status": "running",
            "version": 3,
            "epoch": 0,
            "batches_done": 9,
            "pending_gradients": 2,
            "created": 2.0,
        },
    ]
    header, first, second = job_table(jobs).splitlines()
    assert first.startswith("j-22  char-lstm 10x10  running") and second.startswith("j-1   old")
    assert header.index("STATUS") == first.index("running") == second.index("finished")
    assert job_table([]).startswith("no jobs yet")


def test_the_cli_helper_passes_an_admin_token_that_starts_with_a_dash(stack, monkeypatch):
    """argparse reads `--admin-token -abc` as a missing value; the `=` form the helper uses does not."""
    monkeypatch.setitem(stack.state, "admin_token", "-" + stack.state["admin_token"])
    proc = stack.cli("jobs", check=False)
    assert "expected one argument" not in proc.stderr and "401" in proc.stderr + proc.stdout


def test_one_identity_cycling_lease_and_release_over_http_is_refused_within_150_cycles(stack):
    """Lease churn is not free (issue 39): over HTTP, one identity that leases
    and hands back task after task (how a client would pick the task it wants)
    gets a 429 from its release budget well within 150 cycles."""
    stack.char_lstm_job(batches=40, epochs=1, lease_seconds=60)  # a task handed back is not offered back
    # (the stack is the module's: a lease may also hand out another test's job's task)
    api = stack.state["api"]
    token = requests.post(f"{api}/volunteers", json={"name": "churn"}, timeout=10).json()["volunteer_token"]
    # the budget's windows are aligned to the clock: a run across two may hand back 30 in each (61 cycles)
    for cycle in range(1, 151):
        for _ in range(20):  # a 204 while the lease drops other tests' stale tasks on the way (5 a call)
            leased = requests.post(f"{api}/tasks/lease", json={"volunteer_token": token}, timeout=30)
            if leased.status_code != 204:
                break
        assert leased.status_code == 200, leased.text
        task = leased.json()
        released = requests.post(
            f"{api}/tasks/release",
            json={
                "job_id": task["job_id"],
                "lease_token": task["lease_token"],
                "volunteer_token": token,
                "reason": "stopped",
            },
            timeout=10,
        )
        if released.status_code == 429:
            break
        assert released.status_code == 200, released.text
    assert released.status_code == 429 and cycle <= 150 and "handed back" in released.text, (cycle, released.text)


@pytest.mark.soak  # two lease periods of real time; its guards' own tests run in make test (test_synchronous.py)
def test_an_honest_volunteer_is_seated_in_a_round_another_client_squats_within_two_lease_periods(tmp_path):
    """The squat of issue 39 over HTTP: a client takes both seats of a K = 2 synchronous round,
    heartbeats them and leases each task again the moment its lease runs out. A seat lasts one
    lease and goes to someone else when let go; an honest volunteer asking as a page does (every
    second, as the round's wait says) is seated within two lease periods. (Every local volunteer
    is 127.0.0.1: here the squatter is one identity; a deploy bars its address too.) A stack of its
    own: no other test's tasks in the queue."""
    lease_seconds = 10
    stack = LocalCloudProcess(tmp_path)
    try:
        squat(stack, lease_seconds)
    finally:
        assert stack.stop() == 0


def squat(stack: LocalCloudProcess, lease_seconds: int) -> None:
    job = stack.char_lstm_job(batches=2, epochs=1, k=2, staleness=0, synchronous=True, lease_seconds=lease_seconds)
    api = stack.state["api"]

    def identity(name: str) -> str:
        return requests.post(f"{api}/volunteers", json={"name": name}, timeout=10).json()["volunteer_token"]

    def lease(token: str) -> dict | None:
        """A lease of the job's task, a round's wait, or None (none now)."""
        reply = requests.post(f"{api}/tasks/lease", json={"volunteer_token": token}, timeout=30)
        assert reply.status_code in (200, 204), reply.text
        return reply.json() if reply.status_code == 200 else None

    squatter, honest = identity("squatter"), identity("honest")
    held: list[dict] = []
    deadline = time.monotonic() + 30
    while len(held) < 2:
        assert time.monotonic() < deadline, "the squatter did not get both seats"
        task = lease(squatter)
        if task and task["kind"] == "train":
            held.append(task)
    squatted = time.monotonic()
    seated = None
    next_honest = next_beat = squatted
    while seated is None:
        now = time.monotonic()
        assert now - squatted < 2 * lease_seconds, "the honest volunteer was not seated within two lease periods"
        if now >= next_beat:  # the squatter keeps its leases alive as long as it may
            for task in held:
                body = {"job_id": job, "lease_token": task["lease_token"], "volunteer_token": squatter}
                beat = requests.post(f"{api}/tasks/heartbeat", json=body, timeout=10)
                if beat.status_code == 200:
                    task["lease_token"] = beat.json()["lease_token"]
            next_beat = now + 2
        again = lease(squatter)  # and asks for the round's tasks again all the time
        if again and again["kind"] == "train":
            held.append(again)
        if now >= next_honest:
            answer = lease(honest)
            if answer and answer["kind"] == "train":
                seated = answer
            next_honest = now + (answer["retry_after"] if answer and answer["kind"] == "wait" else 1)
        time.sleep(0.1)
    assert seated["base_version"] == 0 and seated["batch"] in {t["batch"] for t in held[:2]}
    assert len(held) == 2, "the squatter leased a seat it had let go"


def test_a_second_local_stack_keeps_its_own_state_and_never_deletes_the_firsts(stack):
    """Two `crowdtrain local` in one folder: the second leaves .crowdtrain/local.json (the other
    commands' default) to the first, says how to reach itself, and on exit removes only its own file."""
    shared = stack.workdir / ".crowdtrain" / "local.json"
    before = json.loads(shared.read_text())
    second = subprocess.Popen(
        [str(CLI), "local", "--api-port", "0", "--web-port", "0", "--status-every", "0", "--no-demo"],
        cwd=stack.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    own = stack.workdir / ".crowdtrain" / f"local-{second.pid}.json"
    try:
        deadline = time.monotonic() + 120
        while not (own.exists() and "api" in json.loads(own.read_text() or "{}")):
            assert second.poll() is None and time.monotonic() < deadline, "the second stack did not start"
            time.sleep(0.2)
        mine = json.loads(own.read_text())
        assert json.loads(shared.read_text()) == before and mine["api"] != before["api"]
        assert requests.post(f"{mine['api']}/volunteers", json={"name": "second"}, timeout=10).status_code == 201
    finally:
        second.send_signal(signal.SIGINT)
        output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output
    assert f"reach this one with --api={mine['api']}" in output
    assert not own.exists() and json.loads(shared.read_text()) == before  # the first's state is untouched


def test_a_downloaded_model_loads_in_node_with_the_readmes_tool(stack, tmp_path):
    """README, "Using it": `crowdtrain download` then `node frontend/tools/load_model.mjs DIR`."""
    job = stack.char_lstm_job(batches=2, epochs=1)
    stack.cli("download", job, str(tmp_path / "model"))
    shown = subprocess.run(
        ["node", "frontend/tools/load_model.mjs", str(tmp_path / "model")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(shown.stdout.strip().splitlines()[-1])
    spec = stack.api.call("GET", f"/jobs/{job}")["spec"]
    assert loaded["parameters"] == sum(math.prod(w["shape"]) for w in spec["weights"])
    assert loaded["inputs"][0][1:] == spec["dataset"]["x"]["shape"][1:] + [128]  # one-hot characters


def test_jobs_share_leases_over_http_and_a_new_jobs_check_goes_first(stack):
    """Issue 40 over HTTP: a job started behind another's 300-task backlog gets
    one of the next 6 leases; three running jobs of equal priority each get
    25-42 % of 120 leases; a new job's held-out check goes out within 10 leases.
    (The module's stack: the other tests' jobs are paused first, and stay so.)"""
    api = stack.state["api"]
    for job in stack.api.call("GET", "/jobs")["jobs"]:
        if job["status"] == "running":
            stack.api.call("POST", f"/jobs/{job['job_id']}/pause")
    leases, token = 0, ""

    def lease() -> dict:
        """A lease by a fresh identity every four (the default leases an identity may hold)."""
        nonlocal leases, token
        if leases % 4 == 0:
            token = requests.post(f"{api}/volunteers", json={"name": "fair"}, timeout=10).json()["volunteer_token"]
        leases += 1
        reply = requests.post(f"{api}/tasks/lease", json={"volunteer_token": token}, timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()

    backlog = stack.char_lstm_job(batches=300, epochs=1, lease_seconds=600)
    assert {lease()["job_id"] for _ in range(3)} == {backlog}
    new = stack.char_lstm_job(batches=60, epochs=1, lease_seconds=600)
    assert new in [lease()["job_id"] for _ in range(6)]
    third = stack.char_lstm_job(batches=60, epochs=1, lease_seconds=600)
    shares = Counter(lease()["job_id"] for _ in range(120))
    assert set(shares) == {backlog, new, third} and all(30 <= n <= 50 for n in shares.values()), shares
    checked = stack.char_lstm_job(batches=4, epochs=1, lease_seconds=600, held_out=1)
    first = [lease() for _ in range(10)]
    assert ("evaluate", checked, 0) in [(t["kind"], t["job_id"], t["base_version"]) for t in first], first
