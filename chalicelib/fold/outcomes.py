"""What the fold did with one result. The values double as the names of the
job's counters (`discarded_<reason>`) and of the reasons on discarded leases."""

from __future__ import annotations

from enum import Enum


class FoldOutcome(str, Enum):
    GONE = "gone"  # the job was deleted
    DUPLICATE = "duplicate"  # its batch is already folded, pending or discarded
    AWAITING_REPLICA = "awaiting_replica"  # a first copy, waiting for its check
    DISPUTED = "disputed"  # a check that disagreed: both copies wait for a third
    SUMMED = "summed"  # in a partial sum, sent to the job's top-level fold
    PENDING = "pending"  # recorded for the next update
    FOLDED = "folded"  # recorded, and the update it completed is folded
    # discarded, the batch re-queued:
    STALE = "stale"  # computed on a version more than `staleness` behind
    INVALID = "invalid"  # wrong size, not finite, over the norm bound, or changed
    SAME_VOLUNTEER = "same_volunteer"  # a replica check by the first copy's own volunteer
    SAME_ADDRESS = "same_address"  # ... or by a volunteer at the first copy's source address
    REPLICA_VERSION = "replica_version"  # a replica check computed on another version
    DISAGREEMENT = "disagreement"  # a third copy agrees with neither of the first two
    BARRED = "barred"  # its volunteer was outvoted too often and lost its standing
    OUTVOTED = "outvoted"  # a copy the other two disagreed with (its batch was folded)
    OVER_SHARE = "over_share"  # its volunteer, or its source address, already has its share of the update
    SPLIT_SUM = "split_sum"  # in a partial sum some of whose batches were already taken
