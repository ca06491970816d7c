"""Poisoning: which share of hostile volunteers each aggregation rule survives.

The fold's own code (chalicelib/domain/strategies.py, the Adam of
chalicelib/domain/optimizers.py, the gradient norm bound of
model/gradients.py) trains a softmax classifier (20 features, 10 classes of
Gaussian clusters; clean held-out accuracy about 0.9) for EPOCHS epochs of
TASKS tasks, K gradients per update (8 and 16). Each task's volunteer is hostile with
probability `share` (its share of the identities), so an update's hostile
count varies as it would with volunteers arriving at random. Attacks:

- sign flip at the norm bound: minus the honest mean direction, scaled to the
  job's max_grad_norm (the largest a gradient may be and still pass);
- scaled noise: a random direction at the norm bound;
- the tail: one hostile volunteer holds the lease of each epoch's last task
  until the rest of the epoch is folded, so that (where the epoch's tasks
  are not a multiple of K) the epoch's last update is its gradient alone:
  run with TASKS % K == 1, as jobs could be before robust rules required a
  multiple of K, and with TASKS a multiple of K, as they must be now.

- one client at its cap: however many identities and requests it has, one
  client (one source address) gives at most `max_share` of each update
  (chalicelib/fold/shares.py); here it fills that share of every update,
  at the default quarter (2 of 8, 4 of 16), with sign flips at the bound.

Replication (BOINC's, `replication`): each task's first copy is checked by
a second identity, a dispute settled by a third, with the fold's rules
(chalicelib/domain/spec.py's Replication: check_rate, outvoted identities
starting over, identities outvoted in more than a quarter of their judged
copies barred). Hostile copies of one batch agree with each other (each
flips the same honest gradient), so two hostile identities pass a check
together. Measured for no replication, every result checked, and adaptive
(trusted after 10 agreeing results, spot checks down to 10 %), against
identities that always attack and "sleepers" that stay honest until
trusted: copies computed per folded result (a barred identity's included),
the share of folded gradients that are hostile, and the median's accuracy
(K = 8).

A run survives when its final held-out accuracy is within 0.05 of the clean
run's. Mean is not robust; median, trimmed mean (0.2) and clipped mean (at
the honest gradients' median norm) are. Results go to docs/security.md.
"""

from __future__ import annotations

import numpy as np

from bench import common
from chalicelib.domain.optimizers import make_optimizer
from chalicelib.domain.records import Result
from chalicelib.domain.schema import DEFAULT_ROBUST_SHARE
from chalicelib.domain.sections import Replication
from chalicelib.domain.strategies import ClippedMean, make_strategy
from chalicelib.fold.shares import capped
from chalicelib.store.reputations import Standing

FEATURES, CLASSES, BATCH = 20, 10, 32
KS, TASKS, EPOCHS = (8, 16), 64, 4  # K gradients per update; the tasks of an epoch, a multiple of each K
MAX_GRAD_NORM = 10.0  # the job's bound: a hostile gradient may be this large and still pass
SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5)
TOLERANCE = 0.05


def problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.0, size=(CLASSES, FEATURES))

    def draw(n):
        y = rng.integers(0, CLASSES, n)
        return (centres[y] + rng.normal(scale=1.0, size=(n, FEATURES))).astype(np.float32), y

    return draw(TASKS * BATCH), draw(2000)


def loss_and_grad(w, x, y):
    kernel, bias = w
    logits = x @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(CLASSES, dtype=np.float32)[y]
    delta = (p - onehot) / len(y)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)).mean()), [x.T @ delta, delta.sum(axis=0)]


def accuracy(w, x, y):
    return float((np.argmax(x @ w[0] + w[1], axis=1) == y).mean())


def norm(g):
    return float(np.sqrt(sum(float(np.sum(t * t)) for t in g)))


def scaled(g, size):
    return [t * np.float32(size / max(norm(g), 1e-12)) for t in g]


def hostile(attack: str, honest: list, rng) -> list:
    if attack == "noise":
        return scaled([rng.normal(size=t.shape).astype(np.float32) for t in honest[0]], MAX_GRAD_NORM)
    mean = [np.mean([g[i] for g in honest], axis=0) for i in range(2)]
    return scaled([-t for t in mean], MAX_GRAD_NORM)  # sign flip at the bound


class ReplicatedCrowd:
    """Which gradient each task folds under a replication policy, and at
    what cost: each copy by an identity drawn at random (all different),
    records kept as the fold keeps them (store/reputations.py), and a barred
    identity's copies computed but discarded (and drawn again)."""

    def __init__(self, replication: Replication | None, share: float, sleepers: bool, rng, identities: int = 20):
        self.replication, self.sleepers, self.rng = replication, sleepers, rng
        self.identities, self.hostile = identities, set(range(round(share * identities)))
        self.standing = [Standing() for _ in range(identities)]
        self.judges: list[set[int]] = [set() for _ in range(identities)]  # who outvoted each (its address)
        self.copies = self.folded = self.hostile_folded = 0

    def _attacks(self, who: int) -> bool:
        if who not in self.hostile:
            return False
        return not self.sleepers or self.replication.check_rate(self.standing[who].agreed) < 1.0  # waits for trust

    def _draw(self, taken: list[int]) -> int:
        """The identity whose copy counts next: barred ones' copies are computed and thrown away."""
        while True:
            who = int(self.rng.integers(self.identities))
            if who in taken:
                continue
            self.copies += 1
            if self.replication is None or not self.replication.barred(self.standing[who]):
                return who

    def _judged(self, who: int, agreed: bool, by: tuple[int, ...] = ()) -> None:
        s, judges = self.standing[who], self.judges[who]
        judges.update(by)
        self.standing[who] = Standing(
            s.agreed + 1 if agreed else 0, s.outvoted + (not agreed), s.judged + 1, len(judges)
        )

    def fold_one(self) -> bool:
        """One task: whether the gradient it folds is hostile."""
        first = self._draw([])
        flipped = self._attacks(first)
        if self.replication is not None and self.rng.random() < self.replication.check_rate(
            self.standing[first].agreed
        ):
            second = self._draw([first])
            if self._attacks(second) == flipped:
                self._judged(first, True)
                self._judged(second, True)
            else:  # a dispute: the third copy's side wins, the other is outvoted
                third = self._draw([first, second])
                winner, loser = (first, second) if self._attacks(third) == flipped else (second, first)
                flipped = self._attacks(third)
                for who in (winner, third):
                    self._judged(who, True)
                self._judged(loser, False, by=(winner, third))
        self.folded += 1
        self.hostile_folded += flipped
        return flipped


REPLICATION_POLICIES = {
    "none": None,
    "every result checked, no barring": Replication(copies=2, bar_ratio=0.0),
    "every result checked": Replication(copies=2),
    "adaptive (trusted after 10, spot checks 10 %)": Replication(copies=2, trust_after=10, spot_check=0.1),
}
REPLICATION_SHARES = (0.1, 0.2, 0.3, 0.4)


def outvoting(replication: Replication, by_address: bool, honest: int = 20, seed: int = 7) -> dict:
    """The outvoting attack: two hostile clients (two identities each, at
    addresses A and B) take the check and the tie-break of every honest first
    copy (the worst case: each picks the tasks it wants by cycling leases) and
    outvote it. Honest identities barred after EPOCHS x TASKS tasks, counting
    a verdict's judges by address (the fold's rule) or by identity (before)."""
    rng = np.random.default_rng(seed)
    standing, judges = [Standing() for _ in range(honest)], [set() for _ in range(honest)]
    discarded = 0
    for task in range(EPOCHS * TASKS):
        who = int(rng.integers(honest))
        if replication.barred(standing[who]):
            discarded += 1  # its copy no longer counts: another honest one is asked
            continue
        check, tie_break = (f"A{task % 2}", "A"), (f"B{task % 2}", "B")  # (identity, address)
        judges[who].update(j[1] if by_address else j[0] for j in (check, tie_break))
        s = standing[who]
        standing[who] = Standing(0, s.outvoted + 1, s.judged + 1, len(judges[who]))
    barred = sum(replication.barred(s) for s in standing)
    judged = "by address (the fold)" if by_address else "by identity (before)"
    return {"judges": judged, "honest": honest, "barred": barred, "discarded": discarded}


def claimed_steps(k: int = 5, steps: int = 16, honest_steps: int = 1) -> list[dict]:
    """The claimed-steps attack: in a job with a range of local steps (results
    weigh by the steps they report), one identity reports every step of its
    task (H = 16) with a sign-flipped move at the clip norm, beside K - 1
    honest results of 1 step, under clipped_mean (K = 5, max_share's default
    for a robust rule). Its share of the update's weight, and the cosine of the
    applied update with the honest mean, with the claims believed and with the
    fold's cap (chalicelib/fold/shares.py's `capped`)."""
    (x, y), _ = problem()
    w = [np.zeros((FEATURES, CLASSES), np.float32), np.zeros(CLASSES, np.float32)]
    honest = [loss_and_grad(w, x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])[1] for i in range(k - 1)]
    clip = float(np.median([norm(g) for g in honest]))
    mean = [np.mean([g[i] for g in honest], axis=0) for i in range(2)]
    gradients = [*honest, scaled([-t for t in mean], clip)]
    group = [
        Result("j", 0, i, f"l{i}", 0, "", 0.0, BATCH * n, f"v{i}", address=f"192.0.2.{i}")
        for i, n in enumerate([honest_steps] * (k - 1) + [steps])
    ]
    claimed = [float(honest_steps)] * (k - 1) + [float(steps)]
    rule = ClippedMean(clip)
    rows = []
    for label, weights in (
        ("believed (before)", claimed),
        ("capped at max_share (the fold)", capped(group, claimed, DEFAULT_ROBUST_SHARE, True)),
    ):
        applied = rule.mean(zip(gradients, weights))
        cosine = sum(float(np.sum(a * m)) for a, m in zip(applied, mean)) / (norm(applied) * norm(mean))
        rows.append(
            {
                "claims": label,
                "k": k,
                "steps": steps,
                "honest_steps": honest_steps,
                "max_share": DEFAULT_ROBUST_SHARE,
                "share": weights[-1] / sum(weights),
                "cosine": cosine,
            }
        )
    return rows


def train(
    rule: dict,
    attack: str,
    share: float,
    k: int,
    tasks: int = TASKS,
    tail: bool = False,
    seed: int = 0,
    capped: int = 0,
    crowd: ReplicatedCrowd | None = None,
) -> float:
    """Final held-out accuracy of one run."""
    (x, y), (hx, hy) = problem(seed)
    rng = np.random.default_rng(seed + 1)
    weights = [np.zeros((FEATURES, CLASSES), np.float32), np.zeros(CLASSES, np.float32)]
    optimizer, strategy = make_optimizer({"name": "adam", "learning_rate": 0.05}), make_strategy(rule)
    state = optimizer.initial_state(weights)
    for _ in range(EPOCHS):
        order = rng.permutation(tasks)
        for start in range(0, tasks, k):
            batches = order[start : start + k]
            honest = [
                loss_and_grad(
                    weights,
                    x[b % TASKS * BATCH : (b % TASKS + 1) * BATCH],
                    y[b % TASKS * BATCH : (b % TASKS + 1) * BATCH],
                )[1]
                for b in batches
            ]
            bad = (
                np.array([crowd.fold_one() for _ in batches]) if crowd is not None else rng.random(len(batches)) < share
            )
            bad[:capped] = True  # one client at its share of the update
            if tail and start + k >= tasks:  # the epoch's last task is the attacker's
                bad[-1] = True
            gradients = [hostile(attack, honest, rng) if b else g for g, b in zip(honest, bad)]
            gradients = [g for g in gradients if norm(g) <= MAX_GRAD_NORM * (1 + 1e-6)]  # the fold's check
            combined = strategy.aggregate(gradients)
            weights, state = optimizer.apply(weights, combined, state)
    return accuracy(weights, hx, hy)


def rules() -> dict[str, dict]:
    (x, y), _ = problem()
    w = [np.zeros((FEATURES, CLASSES), np.float32), np.zeros(CLASSES, np.float32)]
    clip = float(
        np.median(
            [
                norm(loss_and_grad(w, x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])[1])
                for i in range(TASKS)
            ]
        )
    )
    return {
        "mean": {"name": "mean"},
        "median": {"name": "median"},
        "trimmed mean 0.2": {"name": "trimmed_mean", "trim": 0.2},
        f"clipped mean {clip:.2f}": {"name": "clipped_mean", "clip_norm": clip},
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    shares, ks = ((0.0, 0.2, 0.4), (8,)) if args.quick else (SHARES, KS)
    clean = train({"name": "mean"}, "flip", 0.0, ks[0])
    print(f"clean run (mean, no attacker): held-out accuracy {clean:.3f}; {TASKS} tasks x {EPOCHS} epochs")
    results = {
        "ks": list(ks),
        "tasks": TASKS,
        "epochs": EPOCHS,
        "clean": clean,
        "tolerance": TOLERANCE,
        "shares": list(shares),
        "attacks": {},
        "tail": {},
        "capped": {},
        "max_share": DEFAULT_ROBUST_SHARE,
        "replication": [],
    }
    for k in ks:
        for attack, label in (("flip", "sign flip at the norm bound"), ("noise", "noise at the norm bound")):
            table = results["attacks"].setdefault(attack, {}).setdefault(str(k), {})
            for name, rule in rules().items():
                table[name] = [train(rule, attack, share, k) for share in shares]
                share = survives(shares, table[name], clean)
                print(
                    f"K={k:<3} {label:<28} {name:<22} "
                    + " ".join(f"{a:.2f}" for a in table[name])
                    + f"   survives up to {100 * share:.0f} %",
                    flush=True,
                )
        # the tail: one hostile lease held to the end of each epoch
        for name, rule in rules().items():
            results["tail"].setdefault(str(k), {})[name] = tail = {
                "tasks % K == 1": train(rule, "flip", 0.0, k, tasks=TASKS + 1, tail=True),
                "tasks % K == 0": train(rule, "flip", 0.0, k, tasks=TASKS, tail=True),
            }
            print(
                f"K={k:<3} tail attack, {name:<22} {TASKS + 1} tasks: {tail['tasks % K == 1']:.3f}   "
                f"{TASKS} tasks: {tail['tasks % K == 0']:.3f}",
                flush=True,
            )
        # one client filling its share of every update (max_share's default, DEFAULT_ROBUST_SHARE)
        cap = max(1, int(DEFAULT_ROBUST_SHARE * k))
        for name, rule in rules().items():
            results["capped"].setdefault(str(k), {})[name] = capped = train(rule, "flip", 0.0, k, capped=cap)
            print(f"K={k:<3} one client at its share ({cap} of {k}), {name:<22} {capped:.3f}", flush=True)
    for sleepers in (False, True):
        label = "sleepers" if sleepers else "always"
        for policy, replication in REPLICATION_POLICIES.items():
            if sleepers and replication is None or sleepers and not replication.trust_after:
                continue  # a sleeper is an attack on trust: without it, it is the honest crowd
            for share in shares if not args.quick else (0.4,):
                crowd = ReplicatedCrowd(replication, share, sleepers, np.random.default_rng(7))
                accuracy = train({"name": "median"}, "flip", 0.0, ks[0], crowd=crowd)
                row = {
                    "attack": label,
                    "policy": policy,
                    "share": share,
                    "accuracy": accuracy,
                    "copies_per_result": crowd.copies / crowd.folded,
                    "hostile_folded": crowd.hostile_folded / crowd.folded,
                }
                results["replication"].append(row)
                print(
                    f"replication {policy:<46} {label:<8} {100 * share:3.0f} % hostile: "
                    f"{row['copies_per_result']:.2f} copies per result, {100 * row['hostile_folded']:4.1f} % of "
                    f"folded gradients hostile, median K={ks[0]} accuracy {accuracy:.3f}",
                    flush=True,
                )
    policy = Replication(copies=2)  # the defaults: bar_ratio 0.25 of at least bar_after 4, bar_judges 3
    for by_address in (True, False):
        row = outvoting(policy, by_address)
        results.setdefault("outvoting", []).append(row)
        print(
            f"outvoting: two hostile clients at 2 addresses take every honest copy's check and tie-break; "
            f"judges counted {row['judges']}: {row['barred']} of "
            f"{row['honest']} honest identities barred",
            flush=True,
        )
    results["claimed_steps"] = claimed_steps()
    for row in results["claimed_steps"]:
        print(
            f"claimed steps ({row['steps']} against {row['honest_steps']}, K = {row['k']}, clipped mean), "
            f"claims {row['claims']}: one identity's share of the update's weight {100 * row['share']:.0f} %, "
            f"cosine with the honest mean {row['cosine']:+.2f}",
            flush=True,
        )
    median = max(survives(shares, results["attacks"]["flip"][str(k)]["median"], clean) for k in ks)
    defended = {
        policy: survives([r["share"] for r in rows], [r["accuracy"] for r in rows], clean)
        for policy in REPLICATION_POLICIES
        if (rows := [r for r in results["replication"] if r["policy"] == policy and r["attack"] == "always"])
    }
    best = max(defended, key=lambda p: (defended[p], -list(REPLICATION_POLICIES).index(p)))
    tail_ok = all(t["median"]["tasks % K == 0"] >= clean - TOLERANCE for t in results["tail"].values())
    met = max(median, defended[best]) >= 0.4 and tail_ok
    print(
        f"target: median at K >= 8 survives 40 % sign flips at the norm bound and the tail attack: "
        f"{'met' if met else 'NOT met'} (sign flips up to {100 * median:.0f} % alone, "
        f"{100 * defended[best]:.0f} % behind replication ({best}); the tail "
        f"{'survived' if tail_ok else 'not survived'} with an epoch a multiple of K)"
    )
    results.update(target_met=met, median_survives=median, replicated_survives=defended[best], replicated_policy=best)
    common.save("poison", results, args)


def survives(shares, accuracies, clean: float) -> float:
    """The largest share up to which every run stayed within TOLERANCE of the clean run."""
    best = 0.0
    for share, accuracy in zip(shares, accuracies):
        if accuracy < clean - TOLERANCE:
            break
        best = share
    return best


if __name__ == "__main__":
    main()
