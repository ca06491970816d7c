"""Whether the fold may use a result's gradient. The fold never trusts what it
did not check itself, and folds only the bytes it checked (by SHA-256): the
upload form stays valid until the lease ends, so a volunteer could otherwise
swap in another well-formed gradient after completing."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from chalicelib.domain.errors import BadRequest, NotFound
from chalicelib.domain.gradients import check_gradient, digest
from chalicelib.domain.records import Result
from chalicelib.domain.spec import JobSpec
from chalicelib.domain.weights import decode_tensors
from chalicelib.fold.claims import Claims
from chalicelib.fold.outcomes import FoldOutcome
from chalicelib.store.meta import JobMeta
from chalicelib.store.objects import ObjectStore

log = logging.getLogger(__name__)


def relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """||a - b|| / max(||a||, ||b||) over all tensors: 0 for identical copies."""
    diff = np.sqrt(sum(float(np.sum((x.astype(np.float64) - y) ** 2)) for x, y in zip(a, b)))
    scale = max(np.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in g)) for g in (a, b))
    return float(diff / scale) if scale > 0 else 0.0


class SpoiledSum(Exception):
    """A partial sum whose bytes are not those its fold stored."""

    def __init__(self, key: str, what: str):
        super().__init__(f"partial sum {key} {what}")
        self.key = key


@dataclass
class Screened:
    """What checking one invocation's results found: an outcome per result
    (DUPLICATE unless checked), the accepted ones with their digests and
    tensors, and the rejected ones by reason."""

    outcomes: list[FoldOutcome]
    accepted: list[tuple[int, Result, str, list[np.ndarray]]] = field(default_factory=list)  # index, result, ...
    rejected: dict[FoldOutcome, list[Result]] = field(default_factory=dict)

    def turn_away(self, refused: list[bool], reason: FoldOutcome) -> None:
        """Reject the accepted results `refused` marks (one flag per accepted result, in order)."""
        kept = []
        for entry, refuse in zip(self.accepted, refused):
            if refuse:
                self.outcomes[entry[0]] = reason
                self.rejected.setdefault(reason, []).append(entry[1])
            else:
                kept.append(entry)
        self.accepted = kept


class GradientVetting:
    def __init__(self, objects: ObjectStore, memory_bytes: int = 1024 * 2**20, threads: int = 10):
        self.objects = objects
        # decoded gradients in flight at once stay within a quarter of the fold's memory
        self.memory_bytes, self._pool = memory_bytes, ThreadPoolExecutor(threads, thread_name_prefix="vetting")
        self.threads = threads

    def parallelism(self, spec: JobSpec) -> int:
        """How many of this job's gradients may be read and decoded at once."""
        per_gradient = 4 * sum(s.size for s in spec.weight_specs)
        return max(1, min(self.threads, self.memory_bytes // 4 // max(1, per_gradient)))

    def screen(
        self, results: list[Result], meta: JobMeta, spec: JobSpec, claims: Claims, keep: bool = True
    ) -> Screened:
        """Check the results not already taken (their reads in parallel) and
        claim the batches of those accepted; without `keep`, the accepted
        tensors are let go as they are checked."""
        out = Screened([FoldOutcome.DUPLICATE] * len(results))
        fresh = [i for i, r in enumerate(results) if not claims.taken(r)]
        for i, (reason, checked, tensors) in zip(fresh, self.reject_all([results[i] for i in fresh], meta, spec, keep)):
            r = results[i]
            if claims.taken(r):
                continue  # a second result for a batch of this invocation: a duplicate
            if reason:
                out.rejected.setdefault(reason, []).append(r)
                out.outcomes[i] = reason
                continue
            claims.take(r)
            out.accepted.append((i, r, checked, tensors))
            out.outcomes[i] = FoldOutcome.PENDING
        return out

    def reject_all(
        self, results: list[Result], meta: JobMeta, spec: JobSpec, keep: bool = True
    ) -> list[tuple[FoldOutcome | None, str, list[np.ndarray]]]:
        """`reject` for each result, their S3 reads in parallel (as many at once
        as the job's gradient size allows), in the results' order; without
        `keep`, the decoded tensors are let go as each chunk is checked."""
        return [
            (reason, digest, tensors if keep else [])
            for reason, digest, tensors in self._in_parallel(spec, lambda r: self.reject(r, meta, spec), results)
        ]

    def _in_parallel(self, spec: JobSpec, work: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
        """`work` on each item, in order, as many at once as the job's
        gradient size allows; each chunk is done before the next starts."""
        step = self.parallelism(spec)
        for start in range(0, len(items), step):
            yield from [
                done.result() for done in [self._pool.submit(work, item) for item in items[start : start + step]]
            ]

    def reject(self, r: Result, meta: JobMeta, spec: JobSpec) -> tuple[FoldOutcome | None, str, list[np.ndarray]]:
        """Why the result cannot be used (None if it can); if it can, the
        digest of the bytes that passed and the tensors they decode to."""
        if meta.version - r.base_version > spec.staleness:
            return FoldOutcome.STALE, "", []
        try:
            data = self.objects.get(r.key)
            if r.digest and digest(data) != r.digest:  # pinned at completion: only those bytes
                raise BadRequest("the upload changed after its task was completed")
            tensors = check_gradient(spec, data)
        except (BadRequest, NotFound) as err:
            log.warning("job %s: discarding %s-%s: %s", r.job_id, r.epoch, r.batch, err)
            return FoldOutcome.INVALID, "", []
        return None, digest(data), tensors

    def load_sums(self, spec: JobSpec, sums: list[tuple[str, str]]) -> Iterator[list[np.ndarray]]:
        """Partial sums of gradients (key, digest), in order, read in parallel
        (as many at once as fit), each only if its bytes are those its fold
        stored (SpoiledSum otherwise)."""

        def load(item: tuple[str, str]) -> list[np.ndarray]:
            key, accepted = item
            try:
                data = self.objects.get(key)
            except NotFound:
                raise SpoiledSum(key, "is gone")
            if digest(data) != accepted:
                raise SpoiledSum(key, "is not the one accepted")
            return decode_tensors(spec.weight_specs, data)

        return self._in_parallel(spec, load, sums)

    def load(self, spec: JobSpec, key: str, accepted: str) -> list[np.ndarray]:
        """An accepted gradient, only if its bytes are still those accepted."""
        data = self.objects.get(key)
        if accepted and digest(data) != accepted:
            raise BadRequest(f"gradient {key} changed after it was accepted")
        return check_gradient(spec, data)
