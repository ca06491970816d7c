"""Learning quality: does crowdtrain train as well as one TF.js process?

The same char-LSTM, data, batch order and sample budget are trained
(a) sequentially with TF.js in Node (frontend/tools/sequential.mjs, tf.train
optimizers), and (b) through crowdtrain on the real local stack by 1 and 4
Node volunteers running the page's own loop (frontend/tools/volunteer.mjs),
with a few K and S settings. Validation loss (held-out batches) is plotted
against samples seen; target: final distributed / sequential <= 1.02.

The exactness check: 1 volunteer, K = 1, SGD, staleness 0. crowdtrain's version 50 must
equal 50 sequential TF.js SGD steps over the batches in the order crowdtrain
folded them (max abs difference <= 1e-5).
"""
from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from bench import common
from chalicelib.tasks.epochs import batch_order
from chalicelib.store.foldlog import FoldLogStore
from chalicelib.store.meta import MetaStore
from crowdtrain.local.process import LocalCloudProcess

TOOLS = common.ROOT / "frontend" / "tools"


def node(tool: str, *args: str, payload=None, timeout: float = 1800):
    proc = subprocess.run(["node", str(TOOLS / tool), *args], input=json.dumps(payload) if payload else None,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_job(stack: LocalCloudProcess, volunteers: int, **job) -> tuple[str, dict]:
    job_id = stack.char_lstm_job(**job)
    started = time.monotonic()
    procs = [subprocess.Popen(["node", str(TOOLS / "volunteer.mjs"), stack.state["api"], f"node-{i}", job_id],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(volunteers)]
    for proc in procs:
        proc.wait(timeout=3600)
    status = stack.api.call("GET", f"/jobs/{job_id}")
    assert status["status"] == "finished", status
    status["seconds"] = time.monotonic() - started
    return job_id, status


def urls(stack, job_id: str, kind: str, items) -> list[str]:
    if kind == "model":
        return [f"{stack.web}jobs/{job_id}/versions/{v:08d}/model.json" for v in items]
    return [f"{stack.web}jobs/{job_id}/data/batch-{b:06d}.bin" for b in items]


def validation_curve(stack, job_id, status, eval_job, points: int) -> list[list[float]]:
    versions = sorted(set(np.linspace(0, status["version"], points).round().astype(int).tolist()))
    history = {h["version"]: h for h in status["history"]}
    samples, seen = {0: 0}, 0
    for v in range(1, status["version"] + 1):
        seen += history[v]["samples"]
        samples[v] = seen
    losses = node("evaluate.mjs", payload={"spec": status["spec"], "model_urls": urls(stack, job_id, "model", versions),
                                           "eval_urls": urls(stack, eval_job, "batch", range(4))})
    return [[samples[v], loss] for v, loss in zip(versions, losses)]


def main() -> None:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    batches, epochs, seq = (6, 1, 20) if args.quick else (60, 2, 40)
    adam = {"name": "adam", "learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-7}
    results: dict = {"batches": batches, "epochs": epochs, "seq_len": seq, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalCloudProcess(Path(tmp))
        try:
            # held-out batches: a different seed's windows of the same text
            eval_job = stack.char_lstm_job(batches=4, epochs=1, seq_len=seq, seed=99)
            configs = [(1, 1, 4)] if args.quick else [(1, 1, 4), (4, 1, 4), (4, 3, 4), (4, 3, 1)]
            sequential_curve = None
            for volunteers, k, staleness in configs:
                job_id, status = run_job(stack, volunteers, batches=batches, epochs=epochs, k=k, seq_len=seq)
                curve = validation_curve(stack, job_id, status, eval_job, points=8 if not args.quick else 2)
                if sequential_curve is None:
                    # the shuffled order crowdtrain queues (seed 0), epoch by epoch
                    shuffle = SimpleNamespace(seed=0, tasks_per_epoch=batches)
                    order = [b for e in range(epochs) for b in batch_order(shuffle, e)]
                    seq_out = node("sequential.mjs", payload={
                        "model_url": urls(stack, job_id, "model", [0])[0], "spec": status["spec"],
                        "batch_urls": urls(stack, job_id, "batch", order), "optimizer": adam,
                        "eval_urls": urls(stack, eval_job, "batch", range(4)),
                        "eval_every": max(1, len(order) // 7)})
                    sequential_curve = seq_out["val"]
                    results["sequential"] = {"curve": sequential_curve}
                    print(f"sequential TF.js: final validation loss {sequential_curve[-1][1]:.4f}")
                ratio = curve[-1][1] / sequential_curve[-1][1]
                results["runs"].append({"volunteers": volunteers, "k": k, "staleness": staleness, "curve": curve,
                                        "final_ratio": ratio, "seconds": status["seconds"],
                                        "discarded": status["discarded"], "versions": status["version"]})
                print(f"crowdtrain, {volunteers} volunteers, K={k}, S={staleness}: final validation loss "
                      f"{curve[-1][1]:.4f}, ratio to sequential {ratio:.3f}, {status['seconds']:.0f} s")

            # exactness: 1 volunteer, K = 1, SGD
            steps = 5 if args.quick else 50
            sgd = {"name": "sgd", "learning_rate": 0.5}
            job_id = _sgd_job(stack, steps, seq)
            _, status = _finish(stack, job_id)
            folded = sorted(FoldLogStore(stack.table).folds(MetaStore(stack.table).get(job_id)), key=lambda f: f[2])
            order = [b for _, b, _ in folded]
            seq_out = node("sequential.mjs", payload={
                "model_url": urls(stack, job_id, "model", [0])[0], "spec": status["spec"],
                "batch_urls": urls(stack, job_id, "batch", order), "optimizer": sgd})
            final = stack.s3.get_object(Bucket=_bucket(stack), Key=f"jobs/{job_id}/versions/{steps:08d}/weights.bin")
            ours = np.frombuffer(final["Body"].read(), "<f4")
            theirs = np.concatenate([np.asarray(w, np.float32) for w in seq_out["weights"]])
            worst = float(np.abs(ours - theirs).max())
            results["exactness"] = {"steps": steps, "max_abs_diff": worst, "target": 1e-5, "met": worst <= 1e-5}
            print(f"exactness, {steps} SGD steps: max |crowdtrain - sequential| = {worst:.2e} -> "
                  f"{'met' if worst <= 1e-5 else 'NOT met'} (target 1e-5)")
        finally:
            stack.stop()
    ratios = [r["final_ratio"] for r in results["runs"]]
    results["target"] = 1.02
    results["target_met"] = max(ratios) <= 1.02
    common.save("quality", results, args)


def _sgd_job(stack, steps: int, seq: int) -> str:
    from crowdtrain.jobs.charlstm import CharLSTM
    from crowdtrain.jobs.corpus import kjv_text
    model = CharLSTM(seq_len=seq, batch_size=32)
    x, y = model.batches(kjv_text("gen1:1-gen3:24"), steps, seed=5)
    # staleness 0: a gradient computed on an older version is discarded and its
    # batch re-queued, so every folded gradient was computed on the version it updates
    spec = model.job_spec(steps, optimizer={"name": "sgd", "learning_rate": 0.5}, gradients_per_update=1, epochs=1,
                          staleness=0)
    weights = b"".join(w.astype("<f4").tobytes() for w in model.initial_weights(5))
    return stack.api.create_job(spec, weights, (model.batch_file(x[b], y[b]) for b in range(steps)))


def _finish(stack, job_id):
    proc = subprocess.Popen(["node", str(TOOLS / "volunteer.mjs"), stack.state["api"], "exact", job_id],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait(timeout=1800)
    return job_id, stack.api.call("GET", f"/jobs/{job_id}")


def _bucket(stack) -> str:
    return next(b["Name"] for b in stack.s3.list_buckets()["Buckets"] if "-data-" in b["Name"])


if __name__ == "__main__":
    main()
