"""Committing a folded version: META N -> N+1, then the fold log.

The log entry rides in META's write (`last_fold`), credit earned included, so
a committed version's credit is never lost and costs the fold no write of its own.

One write conditional on META's revision advances the version (the step the
exactly-once argument rests on, docs/architecture.md#exactly-once). The fold
log is written after it; the previous version's entry is made whole first,
so only the latest entry can ever be missing from the table, and META holds
that one.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from chalicelib.store.foldlog import FoldLogStore
from chalicelib.store.meta import FoldLog, JobMeta, MetaStore, Pending


class VersionCommit:
    def __init__(self, meta: MetaStore, fold_log: FoldLogStore, clock: Callable[[], float] = time.time):
        self.meta, self.fold_log, self.clock = meta, fold_log, clock
        self._logged: dict[str, int] = {}  # per job, the latest version whose log this process wrote whole

    def commit(
        self, before: JobMeta, after: JobMeta, folded: tuple[Pending, ...], earned: tuple[tuple[str, int, int], ...]
    ) -> JobMeta:
        """Advance META from `before` to `after`, which folded `folded` (the first
        of `before.pending`) and earned its identities `earned` (fold/credit.py)."""
        now = self.clock()
        loss = float(np.mean([p.loss for p in folded]))
        entry = FoldLog(
            after.version,
            loss,
            sum(p.samples for p in folded),
            now,
            tuple((p.epoch, p.batch, p.lease_id) for p in folded),
            earned,
        )
        after = replace(after, rev=before.rev + 1, updated=now, last_fold=entry)
        last = before.last_fold
        if (
            last
            and self._logged.get(before.job_id) != last.version
            and not self.fold_log.is_logged(before.job_id, last.version)
        ):
            self.fold_log.write(before.job_id, last)
        self.meta.put(before.rev, after)
        self.fold_log.write(after.job_id, entry)
        self._logged[after.job_id] = entry.version
        return after
