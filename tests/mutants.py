"""Every guard has a test that fails without it: remove each guard listed
here, one at a time in a copy of the code (a copy per worker, `-j` of them
at once), and run the tests named for it; a guard
whose removal leaves them green is reported, and the script exits 1.

    .venv/bin/python -m tests.mutants            # all
    .venv/bin/python -m tests.mutants -k token   # those whose name has "token"

Each mutant is one exact edit of one file (the script stops if the text is
not there, so the list cannot silently go stale). docs/security.md names the
guards; this list names the test that catches each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a mutant's tests need of the tree (the frontend and the virtualenv stay where they are).
COPIED = ("app.py", "chalicelib", "tests", "infra", "bench", ".chalice", "pyproject.toml", "pytest.ini", "setup.cfg")


SYNC_TEST = "tests/test_synchronous.py::"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]


ADAPTIVE_TEST = (
    "tests/test_replication.py::test_adaptive_replication_checks_new_identities_then_spot_checks_"
    "and_an_outvoted_one_starts_over"
)
MUTANTS = [
    Mutant(
        "lease moves only from the state it is in (conditional write: replayed completions are 409)",
        "chalicelib/store/leases.py",
        "ConditionExpression=f\"#s IN ({', '.join(f':from{i}' for i in range(len(sources)))})\",",
        "ConditionExpression=f\"#s IN ({', '.join(f':from{i}' for i in range(len(sources)))}) OR attribute_exists(pk)\",",  # noqa: E501
        ("tests/test_lifecycle.py::test_duplicate_completion_is_refused",),
    ),
    Mutant(
        "a volunteer's lease slot is taken by a conditional write",
        "chalicelib/store/volunteers.py",
        'ConditionExpression=Attr("pk").not_exists() | Attr("expires").lt(Decimal(str(now))),',
        "",
        ("tests/test_lifecycle.py::test_a_volunteer_holds_a_bounded_number_of_leases",),
    ),
    Mutant(
        "META advances only from the revision read (conditional write)",
        "chalicelib/store/meta.py",
        'self._table.put_item(Item=meta_item(meta), ConditionExpression=Attr("rev").eq(rev))',
        "self._table.put_item(Item=meta_item(meta))",
        ("tests/test_lifecycle.py::test_meta_is_written_only_from_the_revision_that_was_read",),
    ),
    Mutant(
        "the same, raced: threads completing one lease at once against moto's server",
        "chalicelib/store/leases.py",
        "ConditionExpression=f\"#s IN ({', '.join(f':from{i}' for i in range(len(sources)))})\",",
        "ConditionExpression=f\"#s IN ({', '.join(f':from{i}' for i in range(len(sources)))}) OR attribute_exists(pk)\",",  # noqa: E501
        ("tests/test_races.py::test_concurrent_completions_of_one_lease_send_one_result",),
    ),
    Mutant(
        "a token's MAC is checked",
        "chalicelib/tasks/tokens.py",
        "if not hmac.compare_digest(mac, self._mac(key, scope, signed)):",
        "if False:",
        ("tests/test_lifecycle.py::test_forged_and_other_job_tokens_are_rejected",),
    ),
    Mutant(
        "an expired lease's token is refused",
        "chalicelib/tasks/tokens.py",
        "if self._clock() >= lease.expires:",
        "if False:",
        ("tests/test_lifecycle.py::test_expired_lease_is_reassigned_and_its_token_refused",),
    ),
    Mutant(
        "a token of an unknown key is refused",
        "chalicelib/tasks/tokens.py",
        "        if key is None:\n            raise Unauthorized",
        "        if False:\n            raise Unauthorized",
        ("tests/test_secret_rotation.py",),
    ),
    Mutant(
        "tokens decode from canonical base64 only",
        "chalicelib/tasks/tokens.py",
        "if _b64(data) != text:",
        "if False:",
        ("tests/test_bad_input.py",),
    ),
    Mutant(
        "JSON is refused past the depth limit before it is parsed",
        "chalicelib/domain/validate.py",
        "        if deepest > MAX_JSON_DEPTH:",
        "        if False:",
        ("tests/test_bad_input.py",),
    ),
    Mutant(
        "the admin bearer token is checked",
        "chalicelib/jobs/auth.py",
        '            and header.startswith("Bearer ")\n            and hmac.compare_digest(',
        '            and header.startswith("Bearer ")\n            or hmac.compare_digest(',
        ("tests/test_bad_input.py",),
    ),
    Mutant(
        "the fold folds only the bytes complete checked",
        "chalicelib/fold/vetting.py",
        "if r.digest and digest(data) != r.digest:",
        "if False:",
        ("tests/test_lifecycle.py::test_a_gradient_swapped_between_complete_and_the_fold_is_never_folded",),
    ),
    Mutant(
        "results too stale are discarded",
        "chalicelib/fold/vetting.py",
        "if meta.version - r.base_version > spec.staleness:",
        "if False:",
        ("tests/test_lifecycle.py::test_stale_result_is_discarded_and_its_batch_requeued",),
    ),
    Mutant(
        "gradients with NaN or infinities are refused",
        "chalicelib/domain/gradients.py",
        "if not all(np.isfinite(sq) for sq in squares) and not all(np.isfinite(t).all() for t in tensors):",
        "if False:",
        ("tests/test_lifecycle.py::test_wrong_size_and_nan_gradients_are_rejected",),
    ),
    Mutant(
        "a completion's step count must be in the task's range",
        "chalicelib/tasks/completion.py",
        "        if steps not in allowed or steps > most:\n",
        "        if False:\n",
        ("tests/test_local_steps.py",),
    ),
    Mutant(
        "a volunteer's held-out answer counts once per version (conditional write)",
        "chalicelib/store/evaluations.py",
        'ConditionExpression="attribute_not_exists(#c)",\n',
        "",
        ("tests/test_evaluations.py::test_a_volunteer_answers_a_version_once_and_its_copy_goes_to_another",),
    ),
    Mutant(
        "an accepted held-out figure is written once (conditional write)",
        "chalicelib/store/evaluations.py",
        'ConditionExpression="attribute_not_exists(accepted)",\n',
        "",
        ("tests/test_evaluations.py::test_an_accepted_evaluation_is_not_changed_by_later_answers",),
    ),
    Mutant(
        "a held-out figure needs the job's number of agreeing volunteers",
        "chalicelib/tasks/evaluations.py",
        "if support(best, distinct_addresses) < evaluation.copies:",
        "if support(best, distinct_addresses) < 1:",
        ("tests/test_evaluations.py::test_a_forged_held_out_loss_neither_stands_nor_blocks",),
    ),
    Mutant(
        "a volunteer is not handed an evaluation it answered",
        "chalicelib/tasks/source.py",
        "if task.evaluates is not None and self.evaluations.answered(task.job_id, task.evaluates, volunteer_id):",
        "if False:",
        ("tests/test_evaluations.py::test_a_volunteer_answers_a_version_once_and_its_copy_goes_to_another",),
    ),
    Mutant(
        "a robust rule's epoch is a multiple of K (no lone tail update)",
        "chalicelib/domain/schema.py",
        "    if tasks % k:\n",
        "    if False:\n",
        ("tests/test_aggregation.py::test_a_robust_rule_applies_to_every_update_or_the_job_is_refused",),
    ),
    Mutant(
        "a robust rule needs K of at least MIN_ROBUST_GRADIENTS",
        "chalicelib/domain/schema.py",
        "    if k < MIN_ROBUST_GRADIENTS:\n",
        "    if False:\n",
        ("tests/test_aggregation.py::test_a_robust_rule_applies_to_every_update_or_the_job_is_refused",),
    ),
    Mutant(
        "a lease is extended at most to MAX_LEASE_EXTENSION x lease_seconds",
        "chalicelib/tasks/renewal.py",
        "if now + spec.lease_seconds > lease.received + MAX_LEASE_EXTENSION * spec.lease_seconds:",
        "if False:",
        ("tests/test_scale_paths.py::test_heartbeats_stop_at_the_maximum_and_the_task_goes_to_someone_else",),
    ),
    Mutant(
        "a heartbeat holds the volunteer's slot to the renewed lease's end",
        "chalicelib/tasks/renewal.py",
        "        self.slots.extend(Seats.of(record, lease.lease_id), renewed.expires - now)\n",
        "",
        ("tests/test_scale_paths.py::test_a_heartbeated_lease_keeps_holding_its_volunteers_slot",),
    ),
    Mutant(
        "a lease is extended, completed or released only by the identity that took it",
        "chalicelib/tasks/identities.py",
        "if lease.volunteer_id != volunteer_id:",
        "if False:",
        ("tests/test_identities.py::test_a_lease_token_is_not_a_bearer_token",),
    ),
    Mutant(
        "identities are issued at a limited rate per source address",
        "chalicelib/tasks/identities.py",
        "if not self.issued.take(address, self.per_hour):",
        "if False:",
        ("tests/test_identities.py::test_identities_per_address_are_limited",),
    ),
    Mutant(
        "the volunteers behind one address share a lease cap",
        "chalicelib/tasks/slots.py",
        "        if address_slot is None:\n",
        "        if False:\n",
        ("tests/test_identities.py::test_the_volunteers_behind_one_address_share_a_lease_cap",),
    ),
    Mutant(
        "a replica check must come from another source address",
        "chalicelib/fold/replicas.py",
        "elif not reason and self.distinct_addresses and any(r.address == o.address for o in others):",
        "elif False:",
        ("tests/test_identities.py::test_two_identities_from_one_address_cannot_both_check_a_batch",),
    ),
    Mutant(
        "one identity gives at most its share of an update",
        "chalicelib/fold/shares.py",
        "full = sum(p.volunteer_id == r.volunteer_id for p in update) >= cap or (",
        "full = False or (",
        ("tests/test_identities.py::test_one_identity_gives_at_most_its_share_of_an_update",),
    ),
    Mutant(
        "one source address gives at most its share of an update",
        "chalicelib/fold/shares.py",
        "by_address and bool(r.address) and sum(p.address == r.address for p in update) >= cap\n",
        "False\n",
        ("tests/test_identities.py::test_one_address_gives_at_most_its_share_of_an_update",),
    ),
    Mutant(
        "an agreed replica over its volunteer's share of the update is discarded",
        "chalicelib/fold/replicas.py",
        "if not reason and self._over_share(meta, spec, first):",
        "if False:",
        ("tests/test_replication.py::test_an_agreed_copy_over_its_volunteers_share_of_the_update_is_discarded",),
    ),
    Mutant(
        "two disagreeing copies wait for a third instead of both being discarded",
        "chalicelib/fold/replicas.py",
        "        if not reason and not self._agrees(spec, first, second, r):\n",
        "        if False:\n",
        ("tests/test_replication.py::test_a_hostile_copy_loses_to_the_majority_and_the_honest_work_folds",),
    ),
    Mutant(
        "a third copy folds the copy it agrees with",
        "chalicelib/fold/replicas.py",
        "            if self._agrees(spec, first, third, r):\n",
        "            if True:\n",
        ("tests/test_replication.py::test_a_hostile_copy_loses_to_the_majority_and_the_honest_work_folds",),
    ),
    Mutant(
        "a disputing volunteer cannot break the tie",
        "chalicelib/fold/replicas.py",
        "if not reason and any(r.volunteer_id == o.volunteer_id for o in others):",
        "if False:",
        ("tests/test_replication.py::test_a_hostile_copy_loses_to_the_majority_and_the_honest_work_folds",),
    ),
    Mutant(
        "a disputing check's redelivered result is a duplicate",
        "chalicelib/store/awaiting.py",
        "return lease_id in (self.first.lease_id, self.disputed.lease_id if self.disputed else None)",
        "return lease_id == self.first.lease_id",
        ("tests/test_replication.py::test_a_disputing_checks_redelivered_result_is_a_duplicate",),
    ),
    Mutant(
        "adaptive replication checks an identity's every result until it has trust_after agreeing ones",
        "chalicelib/domain/sections.py",
        "return min(1.0, max(self.spot_check, self.trust_after / (agreed + 1)))",
        "return self.spot_check",
        (ADAPTIVE_TEST,),
    ),
    Mutant(
        "a trusted identity is still spot-checked",
        "chalicelib/fold/replicas.py",
        "if self.draw() >= spec.replication.check_rate(standing.agreed):",
        "if spec.replication.check_rate(standing.agreed) < 1.0:",
        (ADAPTIVE_TEST,),
    ),
    Mutant(
        "an identity outvoted in a dispute loses its record",
        "chalicelib/store/reputations.py",
        'UpdateExpression="SET agreed = :zero ADD outvoted :one, judged :one, judges :judges"',
        'UpdateExpression="SET agreed = agreed + :zero ADD outvoted :one, judged :one, judges :judges"',
        (ADAPTIVE_TEST,),
    ),
    Mutant(
        "an identity outvoted too often loses its standing",
        "chalicelib/fold/replicas.py",
        "        if spec.replication.barred(standing):",
        "        if False:",
        (
            "tests/test_replication.py::test_an_identity_outvoted_too_often_loses_its_standing_and_its_copies_are_"
            "discarded",
        ),
    ),
    Mutant(
        "a job without points records no credit",
        "chalicelib/fold/updates.py",
        "earned(group, shares) if spec.credit else ()",
        "earned(group, shares)",
        ("tests/test_credit.py::test_a_job_without_points_keeps_no_credit",),
    ),
    Mutant(
        "a job without points asks for no credit tally",
        "chalicelib/fold/credit.py",
        "        if not spec.credit:\n            return\n",
        "",
        ("tests/test_credit.py::test_an_update_of_ten_identities_writes_no_credit_in_the_fold",),
    ),
    Mutant(
        "a deploy for more volunteers than the account's quotas allow creates nothing",
        "infra/crowdtrain/aws/deploy.py",
        "            if shortfalls:",
        "            if False:",
        (
            "tests/test_deploy_moto_server.py::test_a_deploy_for_more_volunteers_than_the_quotas_allow_creates_"
            "nothing_and_names_the_quota",
        ),
    ),
    Mutant(
        "a crowd of none (or a negative or non-numeric one) is refused",
        "infra/crowdtrain/cli.py",
        '        if not value > 0 or value != value or value == float("inf"):',
        "        if False:",
        (
            "tests/test_deploy_moto_server.py::test_a_deploy_for_more_volunteers_than_the_quotas_allow_creates_"
            "nothing_and_names_the_quota",
        ),
    ),
    Mutant(
        "a job being deleted folds nothing",
        "chalicelib/fold/fold.py",
        'return (meta, self.jobs.spec(job_id)) if meta.status != "deleting" else None',
        "return (meta, self.jobs.spec(job_id))",
        ("tests/test_lifecycle.py::test_a_large_job_is_deleted_in_bounded_steps_with_its_progress_shown",),
    ),
    Mutant(
        "a volunteer token ends 30 days after it was issued or renewed",
        "chalicelib/tasks/tokens.py",
        "        if self._clock() >= volunteer.issued + VOLUNTEER_TOKEN_SECONDS:",
        "        if False:",
        (
            "tests/test_identities.py::test_a_volunteer_token_ends_30_days_after_its_issue_and_a_renewal_keeps_the_"
            "identity",
        ),
    ),
    Mutant(
        "the previous key verifies only as long as a lease lasts after a rotation",
        "chalicelib/store/secrets.py",
        "key_id != self._current.key_id and self._wall() > self._previous_until:",
        "key_id != self._current.key_id and False:",
        (
            "tests/test_secret_rotation.py::test_the_previous_key_verifies_only_as_long_as_a_lease_lasts_after_the_"
            "rotation",
        ),
    ),
    Mutant(
        "a task handed back is not offered to the identity that handed it back",
        "chalicelib/tasks/source.py",
        "task.not_for == volunteer_id and time.time() < task.not_for_until:",
        "False:",
        ("tests/test_release.py::test_a_task_handed_back_is_not_offered_to_the_identity_that_handed_it_back",),
    ),
    Mutant(
        "a dead letter redriven too often is quarantined, not sent round again",
        "chalicelib/tasks/redrive.py",
        "                    if redrives >= MAX_REDRIVES:",
        "                    if False:",
        ("tests/test_quarantine.py::test_a_poison_result_is_quarantined_after_its_redrives_listed_and_sent_back",),
    ),
    Mutant(
        "a credit tally adds to an identity once per range (conditional ADD)",
        "chalicelib/store/credits.py",
        'ConditionExpression="attribute_not_exists(tallied) OR tallied < :t",',
        'ConditionExpression="attribute_not_exists(tallied) OR tallied < :t OR attribute_exists(pk)",',
        ("tests/test_credit.py::test_a_tally_cut_short_or_run_again_counts_each_version_once",),
    ),
    Mutant(
        "a retried credit tally takes the range recorded, not a longer one",
        "chalicelib/store/credits.py",
        "            if state.open_end is not None:\n                return state.through, state.open_end\n",
        "",
        ("tests/test_credit.py::test_a_tally_cut_short_or_run_again_counts_each_version_once",),
    ),
    Mutant(
        "a credit tally's range is taken by a conditional write",
        "chalicelib/store/credits.py",
        '"attribute_not_exists(open_end) AND (attribute_not_exists(through) OR through = :t)"',
        '"attribute_not_exists(pk) OR attribute_exists(pk) OR through = :t"',
        ("tests/test_credit.py::test_two_passes_that_begin_together_take_one_range",),
    ),
    Mutant(
        "only the credit tally that took a range closes it",
        "chalicelib/store/credits.py",
        'ConditionExpression="open_end = :e",',
        'ConditionExpression="open_end = :e OR attribute_exists(pk)",',
        ("tests/test_credit.py::test_a_tally_cut_short_or_run_again_counts_each_version_once",),
    ),
    Mutant(
        "a job without points shows no credit",
        "chalicelib/jobs/credit.py",
        "        if not self.jobs.spec(job_id).credit:",
        "        if not self.jobs.spec(job_id):",
        ("tests/test_credit.py::test_a_job_without_points_keeps_no_credit",),
    ),
    Mutant(
        "the data a page reports is range-checked",
        "chalicelib/domain/wire.py",
        'validate.integer(body, "bytes_down", 0, 0, MAX_BYTES_REPORTED)',
        'body.get("bytes_down", 0)',
        ("tests/test_volunteer_reports.py",),
    ),
    Mutant(
        "a synchronous round seats at most K tasks",
        "chalicelib/store/rounds.py",
        "(contains(tasks, :id) OR size(tasks) < :seats)",
        "(contains(tasks, :id) OR size(tasks) < :seats + 1)",
        (SYNC_TEST + "test_a_round_hands_out_k_tasks_then_waits_for_its_update",),
    ),
    Mutant(
        "a task handed back keeps its seat in the round",
        "chalicelib/store/rounds.py",
        "(contains(tasks, :id) OR size(tasks) < :seats)",
        "(size(tasks) < :seats)",
        (SYNC_TEST + "test_a_task_handed_back_is_leased_again_in_its_round",),
    ),
    Mutant(
        "only a newer version opens a new round",
        "chalicelib/store/rounds.py",
        'ConditionExpression="attribute_not_exists(version) OR version < :v"',
        'ConditionExpression="attribute_not_exists(version) OR version <= :v"',
        (SYNC_TEST + "test_a_round_hands_out_k_tasks_then_waits_for_its_update",),
    ),
    Mutant(
        "a synchronous lease sits in the newest version's round",
        "chalicelib/tasks/source.py",
        "        meta = self.meta.get(task.job_id)  # the newest version",
        "        meta = chosen.meta  # the newest",
        (SYNC_TEST + "test_a_round_is_the_newest_versions_even_when_the_lease_read_meta_a_while_ago",),
    ),
    Mutant(
        "a held-out evaluation takes no seat in a synchronous round",
        "chalicelib/tasks/source.py",
        "if not (spec.synchronous and task.evaluates is None):",
        "if not spec.synchronous:",
        (SYNC_TEST + "test_a_held_out_evaluation_takes_no_seat_in_the_round",),
    ),
    Mutant(
        "a task put back is a fresh copy, not a receive toward the DLQ",
        "chalicelib/tasks/source.py",
        "                self.tasks.enqueue_tasks([task])  # as it is: pinned, or not for its releaser\n"
        "        except QueueGone as err:  # its job was deleted meanwhile: the task goes with it\n"
        '            log.info("dropped task %s-%s of %s: %s", task.epoch, task.batch, task.job_id, err)\n'
        '        self.retire(task, "put back")',
        "                pass\n        except QueueGone:\n            pass\n        self.tasks.hide(task, 0)",
        (SYNC_TEST + "test_waiting_does_not_count_toward_the_dead_letter_queue",),
    ),
    Mutant(
        "the local cloud's moto server applies DynamoDB writes one at a time, atomic as DynamoDB's",
        "infra/crowdtrain/local/moto_server.py",
        '    one_at_a_time(DynamoHandler, "call_action", _ONE_AT_A_TIME)',
        "    pass",
        ("tests/test_atomic_writes.py::test_a_race_for_a_rounds_last_seat_seats_one_as_dynamodb_does",),
    ),
    Mutant(
        "threads sharing the local cloud's clients build their condition expressions one at a time",
        "infra/crowdtrain/local/shared_clients.py",
        '    one_at_a_time(TransformationInjector, "inject_condition_expressions", _BUILDING)',
        "    pass",
        ("tests/test_shared_clients.py::test_two_threads_querying_one_table_each_send_their_own_placeholders",),
    ),
    Mutant(
        "the local edge server queues a crowd's connections (CloudFront drops none)",
        "infra/crowdtrain/local/edge.py",
        "    request_queue_size = 128\n",
        "",
        ("tests/test_local_stack.py::test_the_edge_server_queues_a_crowds_connections_instead_of_dropping_them",),
    ),
    Mutant(
        "a version's disagreeing evaluation answers ask for more copies only up to MAX_CLAIMS",
        "chalicelib/tasks/evaluations.py",
        "            if len(claims) < MAX_CLAIMS:\n",
        "            if True:\n",
        ("tests/test_evaluations.py::test_disagreeing_answers_ask_for_more_copies_only_up_to_the_cap",),
    ),
    Mutant(
        "a replica check is weighed only against a copy computed on the same version",
        "chalicelib/fold/replicas.py",
        "elif not reason and r.base_version != others[0].base_version:",
        "elif False:",
        ("tests/test_replication.py::test_a_check_computed_on_another_version_than_its_first_copy_is_not_compared",),
    ),
    Mutant(
        "per-address limits and checks count an IPv6 client's /64 as one address",
        "app.py",
        '    return network(str(identity.get("sourceIp") or "unknown"))',
        '    return str(identity.get("sourceIp") or "unknown")',
        ("tests/test_identities.py::test_the_addresses_of_one_ipv6_64_are_one_address_to_every_limit",),
    ),
    Mutant(
        "agreeing held-out answers count once per address",
        "chalicelib/tasks/evaluations.py",
        "return len({c.address or c.volunteer_id for c in group}) if distinct_addresses else len(group)",
        "return len(group)",
        ("tests/test_identities.py::test_two_identities_at_one_address_cannot_publish_a_held_out_figure",),
    ),
    Mutant(
        "an identity hands back at most RELEASES_PER_VOLUNTEER tasks a window",
        "chalicelib/tasks/renewal.py",
        "        if not self.volunteers.spend(volunteer_id, self.per_volunteer, self.window_seconds):",
        "        if False:",
        ("tests/test_release.py::test_an_identity_cycling_lease_and_release_is_refused_once_its_budget_is_spent",),
    ),
    Mutant(
        "the identities behind one address share a release budget",
        "chalicelib/tasks/renewal.py",
        "        if not self.addresses.spend(address, self.per_address, self.window_seconds):",
        "        if False:",
        ("tests/test_release.py::test_the_identities_behind_one_address_share_a_release_budget",),
    ),
    Mutant(
        "a release is counted by a write conditional on its budget (nothing counted past it)",
        "chalicelib/store/budgets.py",
        'ConditionExpression="attribute_not_exists(n) OR n < :limit",',
        'ConditionExpression="attribute_not_exists(n) OR n >= :one",',
        ("tests/test_release.py::test_an_identity_cycling_lease_and_release_is_refused_once_its_budget_is_spent",),
    ),
    Mutant(
        "a lease names the results of its own base version's fold, not the newest fold's",
        "chalicelib/tasks/handout.py",
        "if last is not None and last.version == lease.base_version:",
        "if last is not None:",
        ("tests/test_local_steps.py::test_a_check_pinned_to_an_older_version_names_no_fold",),
    ),
    Mutant(
        "an identity's share of an update's weight is capped at max_share (not only its count of results)",
        "chalicelib/fold/shares.py",
        "    if max_share >= 1:",
        "    if max_share >= 0:",
        (
            "tests/test_local_steps.py::test_one_identity_claiming_every_step_gets_at_most_max_share_of_the_updates_weight",
        ),
    ),
    Mutant(
        "credit follows the weight an update kept",
        "chalicelib/fold/updates.py",
        "earned(group, shares) if spec.credit",
        "earned(group) if spec.credit",
        (
            "tests/test_local_steps.py::test_one_identity_claiming_every_step_gets_at_most_max_share_of_the_updates_weight",
        ),
    ),
    Mutant(
        "an admin action that META moved under reads it again (then a 409), never a 5xx",
        "chalicelib/jobs/admin.py",
        "        except StaleState:\n            continue",
        "        except KeyError:\n            continue",
        ("tests/test_lifecycle.py::test_an_admin_action_racing_the_fold_retries_and_never_answers_5xx",),
    ),
    Mutant(
        "a synchronous round's seat is not extended by heartbeats (it lasts one lease)",
        "chalicelib/tasks/renewal.py",
        "        if spec.synchronous and lease.evaluates is None:\n",
        "        if False:\n",
        (SYNC_TEST + "test_a_rounds_seat_is_not_extended_by_heartbeats",),
    ),
    Mutant(
        "a round's seat let go or lapsed is barred to its holder for a lease",
        "chalicelib/store/rounds.py",
        '":now": _decimal(self._clock())',
        '":now": _decimal(self._clock() + 1e9)',
        (
            SYNC_TEST + "test_a_seat_that_lapsed_is_not_leased_again_by_its_holder_in_the_round",
            SYNC_TEST + "test_a_seat_let_go_is_not_taken_by_another_identity_at_its_address",
            SYNC_TEST + "test_two_clients_taking_turns_on_a_rounds_seats_do_not_squat_it",
        ),
    ),
    Mutant(
        "a round's seat let go is barred to its holder's address too, where addresses count",
        "chalicelib/tasks/source.py",
        'holders = (volunteer_id, f"@{address}") if self.policy.distinct_addresses else (volunteer_id,)',
        "holders = (volunteer_id,)",
        (SYNC_TEST + "test_a_seat_let_go_is_not_taken_by_another_identity_at_its_address",),
    ),
    Mutant(
        "barring needs the verdicts of bar_judges different judges",
        "chalicelib/domain/sections.py",
        "            and standing.judges >= self.bar_judges\n",
        "",
        ("tests/test_replication.py::test_hostile_identities_at_two_addresses_outvoting_an_honest_one_cannot_bar_it",),
    ),
    Mutant(
        "a judge is the outvoting copy's address where addresses count, not its identity",
        "chalicelib/fold/replicas.py",
        "return client(copy.volunteer_id, copy.address, self.distinct_addresses)",
        "return copy.volunteer_id",
        ("tests/test_replication.py::test_hostile_identities_at_two_addresses_outvoting_an_honest_one_cannot_bar_it",),
    ),
    Mutant(
        "compute errors pause only a job that has folded nothing (a hand-back is a claim)",
        "chalicelib/tasks/untrainable.py",
        'if meta.status != "running" or meta.folded_total or meta.pending or meta.auto_paused:',
        'if meta.status != "running" or meta.auto_paused:',
        ("tests/test_release.py::test_compute_errors_never_pause_a_job_that_has_trained",),
    ),
    Mutant(
        "a job pauses itself once: the operator's resume overrides it",
        "chalicelib/tasks/untrainable.py",
        'if meta.status != "running" or meta.folded_total or meta.pending or meta.auto_paused:',
        'if meta.status != "running" or meta.folded_total or meta.pending:',
        (
            "tests/test_release.py::test_a_job_whose_tasks_fail_in_three_browsers_before_any_fold_pauses_itself_with_why",
        ),
    ),
    Mutant(
        "a job pauses itself only after compute errors from SOURCES different volunteers",
        "chalicelib/tasks/untrainable.py",
        "        if sources < SOURCES:",
        "        if sources < 1:",
        (
            "tests/test_release.py::test_a_job_whose_tasks_fail_in_three_browsers_before_any_fold_pauses_itself_with_why",
        ),
    ),
    Mutant(
        "compute errors count by source address toward pausing, where addresses count",
        "chalicelib/tasks/untrainable.py",
        "client(volunteer_id, address, self.distinct_addresses)",
        "volunteer_id",
        ("tests/test_release.py::test_compute_errors_from_one_address_count_once_toward_pausing",),
    ),
    Mutant(
        "a completion's steps can only lower its lease's budget",
        "chalicelib/tasks/completion.py",
        "if steps not in allowed or steps > most:",
        "if steps not in allowed:",
        (
            "tests/test_local_steps.py::test_the_server_sets_each_leases_step_budget_from_its_own_timing_and_a_claim_can_only_lower_it",
        ),
    ),
    Mutant(
        "a lease of a job whose steps vary carries the server's step budget",
        "chalicelib/tasks/handout.py",
        "steps=spec.budget(task.batch, pace) if varies else 0,",
        "steps=0,",
        (
            "tests/test_local_steps.py::test_the_server_sets_each_leases_step_budget_from_its_own_timing_and_a_claim_can_only_lower_it",
        ),
    ),
    Mutant(
        "an identity the server has not timed is budgeted the least steps",
        "chalicelib/domain/spec.py",
        "        if not seconds_per_step:\n            return allowed[0]",
        "        if not seconds_per_step:\n            return allowed[-1]",
        (
            "tests/test_local_steps.py::test_the_server_sets_each_leases_step_budget_from_its_own_timing_and_a_claim_can_only_lower_it",
        ),
    ),
    Mutant(
        "the server times each completed task of a job whose steps vary",
        "chalicelib/tasks/completion.py",
        "        if lease.steps:  # the server's own timing",
        "        if False:  # the server's own timing",
        (
            "tests/test_local_steps.py::test_the_server_sets_each_leases_step_budget_from_its_own_timing_and_a_claim_can_only_lower_it",
        ),
    ),
    Mutant(
        "compute errors do not pause a job with a result waiting for its update",
        "chalicelib/tasks/untrainable.py",
        'if meta.status != "running" or meta.folded_total or meta.pending or meta.auto_paused:',
        'if meta.status != "running" or meta.folded_total or meta.auto_paused:',
        ("tests/test_release.py::test_compute_errors_never_pause_a_job_with_a_result_waiting_for_its_update",),
    ),
    Mutant(
        "a pipelined identity's task is timed from its previous completion when that came later",
        "chalicelib/store/paces.py",
        'began = max(leased, float(last["at"])) if last and "at" in last else leased',
        "began = leased",
        ("tests/test_local_steps.py::test_a_pipelined_identitys_pace_is_timed_from_its_previous_completion",),
    ),
    Mutant(
        "a reputation recorded before judges were kept keeps its verdicts",
        "chalicelib/store/reputations.py",
        "(LEGACY_JUDGES if outvoted else 0)",
        "0",
        ("tests/test_replication.py::test_a_record_from_before_judges_were_kept_keeps_its_verdicts",),
    ),
    Mutant(
        "a job that gave a lease its task spends its turn",
        "chalicelib/tasks/picker.py",
        "self._ahead[job_id] = max(self._ahead[job_id] - total, -total)",
        "self._ahead[job_id] = self._ahead[job_id]",
        (
            "tests/test_fair_share.py::test_three_running_jobs_of_equal_priority_share_120_leases",
            "tests/test_fair_share.py::test_a_job_of_priority_two_gets_twice_the_leases",
        ),
    ),
    Mutant(
        "a job asked while it had no task is at most one turn ahead",
        "chalicelib/tasks/picker.py",
        "self._ahead[other] = min(max(self._ahead[other] + priority, -total), total)",
        "self._ahead[other] = self._ahead[other] + priority",
        ("tests/test_fair_share.py::test_a_job_that_had_no_task_for_a_while_does_not_take_a_run_of_leases",),
    ),
    Mutant(
        "a lease asks the held-out checks' queue first",
        "chalicelib/tasks/source.py",
        "for job_id in [None, *jobs]:",
        "for job_id in [*jobs, None]:",
        ("tests/test_fair_share.py::test_a_held_out_check_that_falls_due_goes_out_before_the_backlog",),
    ),
    Mutant(
        "a paused job's task met on a stale list goes back to its queue",
        "chalicelib/tasks/source.py",
        "            self.put_back(task)\n            return None, False",
        "            self.tasks.delete(task)\n            return None, False",
        ("tests/test_fair_share.py::test_a_paused_job_is_never_asked_and_keeps_its_tasks_for_the_resume",),
    ),
    Mutant(
        "a deleted job's task queue is deleted",
        "chalicelib/jobs/admin.py",
        "self.epochs.tasks.close(job_id)  # its tasks go with it",
        "pass  # its tasks go with it",
        ("tests/test_lifecycle.py::test_deleted_job_disappears_with_its_tasks",),
    ),
    Mutant(
        "a resume that finds the job's queue gone queues the epoch again",
        "chalicelib/jobs/admin.py",
        "            resumed = self.epochs.requeue(resumed)",
        "            pass",
        ("tests/test_fair_share.py::test_a_job_resumed_after_its_queue_was_deleted_gets_its_tasks_again",),
    ),
    Mutant(
        "tasks sent to a job's new queue wait for it",
        "chalicelib/store/queues.py",
        "NEW_QUEUE_TRIES, NEW_QUEUE_PAUSE = 6, 0.5",
        "NEW_QUEUE_TRIES, NEW_QUEUE_PAUSE = 1, 0.5",
        ("tests/test_fair_share.py::test_tasks_sent_to_a_queue_created_a_moment_ago_wait_for_it",),
    ),
    Mutant(
        "a skipped status document is sent on to be written when due",
        "chalicelib/publish/status.py",
        "if self.due is not None and self._trailing.get(meta.job_id) != due:",
        "if False:",
        (
            "tests/test_scale_paths.py::test_a_document_the_fold_skips_is_written_when_its_interval_ends",
            "tests/test_local_counts.py::test_after_two_folds_a_second_apart_the_public_document_shows_the_second_within_20_s",
        ),
    ),
    Mutant(
        "a skipped status document is sent on once per interval",
        "chalicelib/publish/status.py",
        "if self.due is not None and self._trailing.get(meta.job_id) != due:",
        "if self.due is not None:",
        ("tests/test_scale_paths.py::test_a_document_the_fold_skips_is_written_when_its_interval_ends",),
    ),
    Mutant(
        "a dead-lettered task goes back to its job's queue",
        "chalicelib/tasks/redrive.py",
        "url = queue.route(body) if queue.route else queue.source_url",
        "url = queue.source_url",
        ("tests/test_scale_paths.py::test_redrive_returns_one_jobs_dead_tasks_on_request_and_everything_on_schedule",),
    ),
    Mutant(
        "a stage name keeps a job's queue name within SQS's 80 characters",
        "infra/crowdtrain/cli.py",
        'if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", text):',
        "if False:",
        ("tests/test_cli_errors.py::test_a_stage_name_a_jobs_queue_name_would_not_fit_is_refused",),
    ),
    Mutant(
        "the CLI's AWS session reads AWS_REGION, as its help says",
        "infra/crowdtrain/cli.py",
        'region = args.region or os.environ.get("AWS_REGION")',
        "region = args.region",
        ("tests/test_cli_errors.py::test_deploy_reads_aws_region_and_says_plainly_when_there_are_no_credentials",),
    ),
    Mutant(
        "watch counts a job's tasks, not its batches",
        "infra/crowdtrain/cli.py",
        'return int(spec.get("tasks_per_epoch", spec["dataset"]["batches"])) * int(spec["epochs"])',
        'return int(spec["dataset"]["batches"]) * int(spec["epochs"])',
        ("tests/test_cli_errors.py::test_watch_counts_tasks_not_batches_where_a_task_trains_several",),
    ),
    Mutant(
        "the API's job-queue grant names a job id's 12 characters, not any suffix",
        "infra/crowdtrain/aws/policy.py",
        'JOB_QUEUES = "-j-" + "?" * 12',
        'JOB_QUEUES = "-j-*"',
        (
            "tests/test_iam_roles.py::test_each_function_calls_only_what_its_own_policy_allows_and_its_policy_holds_nothing_else",
        ),
    ),
    Mutant(
        "a paused job's held-out check waits in the checks' queue",
        "chalicelib/tasks/source.py",
        "if task.evaluates is not None:  # a paused job's check waits",
        "if False:  # a paused job's check waits",
        ("tests/test_fair_share.py::test_a_paused_jobs_held_out_check_waits_in_the_checks_queue",),
    ),
    Mutant(
        "one client sits in at most its share of a synchronous round's seats",
        "chalicelib/store/rounds.py",
        'f" AND (attribute_not_exists(#s{i}) OR contains(#s{i}, :id) OR size(#s{i}) < :cap)"',
        '""',
        (
            SYNC_TEST + "test_one_client_sits_in_at_most_its_share_of_a_rounds_seats",
            SYNC_TEST + "test_the_identities_at_one_address_share_a_share_of_a_rounds_seats",
        ),
    ),
    Mutant(
        "the lease that opens a round counts its seat in its holders' shares",
        "chalicelib/store/rounds.py",
        "**{_seats(h): {task_id} for h in holders},",
        "",
        (SYNC_TEST + "test_one_client_sits_in_at_most_its_share_of_a_rounds_seats",),
    ),
    Mutant(
        "a synchronous lease's seat is capped at the job's share of an update",
        "chalicelib/tasks/source.py",
        "holders, bar, spec.share_cap",
        "holders, bar",
        (SYNC_TEST + "test_one_client_sits_in_at_most_its_share_of_a_rounds_seats",),
    ),
    Mutant(
        "a GRU with reset_after=True and dropout is refused (the page's cell has no dropout)",
        "chalicelib/domain/models.py",
        'and settings.get("reset_after", settings.get("resetAfter"))',
        "and False",
        ("tests/test_keras_files.py::test_import_keras_lists_each_thing_the_page_cannot_train_and_writes_nothing",),
    ),
    Mutant(
        "a BatchNormalization's moving variance never goes below zero in the fold",
        "chalicelib/domain/statistics.py",
        "out.append(np.maximum(weight - change, 0).astype(np.float32))",
        "out.append((weight - change).astype(np.float32))",
        ("tests/test_statistics.py::test_the_optimizer_moves_trained_weights_and_statistics_move_by_their_change",),
    ),
    Mutant(
        "import-keras refuses weights that are not trained unless they are a layer's own statistics",
        "infra/crowdtrain/jobs/keras_files.py",
        "if [name for name in frozen if name not in own]:",
        "if False:",
        ("tests/test_keras_files.py::test_import_keras_lists_each_thing_the_page_cannot_train_and_writes_nothing",),
    ),
    Mutant(
        "a layer's options the page's layer lacks (attention's dropout) are refused",
        "chalicelib/domain/models.py",
        "if value not in allowed:",
        "if False:",
        ("tests/test_keras_files.py::test_import_keras_lists_each_thing_the_page_cannot_train_and_writes_nothing",),
    ),
    Mutant(
        "import-keras refuses attention called with what the page's layer has not (keywords, masks)",
        "infra/crowdtrain/jobs/keras_files.py",
        'if others or len(node.get("args", [])) < 2:',
        "if False:",
        ("tests/test_keras_files.py::test_attention_called_with_what_the_pages_layer_has_not_is_refused",),
    ),
]


def copy_tree(to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, to / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
        elif source.exists():
            shutil.copy2(source, to / name)


def killed(mutant: Mutant, tree: Path) -> tuple[bool, float]:
    """Apply the mutant in `tree`, run its tests, restore; (the tests failed, seconds)."""
    target = tree / mutant.path
    original = target.read_text()
    if original.count(mutant.before) != 1:
        raise SystemExit(f"mutant {mutant.name!r}: its text is not in {mutant.path} exactly once; update the list")
    target.write_text(original.replace(mutant.before, mutant.after))
    started = time.monotonic()
    try:
        env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'infra'}", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        target.write_text(original)
    return proc.returncode != 0, time.monotonic() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", help="only the mutants whose name contains this")
    p.add_argument(
        "-j",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="mutants run at once, each in its own copy of the tree (default: the cores, at most 4)",
    )
    args = p.parse_args()
    chosen = [m for m in MUTANTS if not args.k or args.k in m.name]
    todo: queue.SimpleQueue[Mutant] = queue.SimpleQueue()
    for mutant in chosen:
        todo.put(mutant)
    survivors, done, lock = [], [0], threading.Lock()

    def worker(tree: Path) -> None:
        copy_tree(tree)
        while True:
            try:
                mutant = todo.get_nowait()
            except queue.Empty:
                return
            dead, seconds = killed(mutant, tree)
            with lock:
                done[0] += 1
                print(
                    f"[{done[0]}/{len(chosen)}] {'killed ' if dead else 'SURVIVED'} {seconds:5.1f} s  {mutant.name}",
                    flush=True,
                )
                if not dead:
                    survivors.append(mutant)

    with tempfile.TemporaryDirectory() as tmp:
        trees = [Path(tmp) / f"tree-{n}" for n in range(max(1, min(args.j, len(chosen))))]
        with concurrent.futures.ThreadPoolExecutor(len(trees)) as pool:
            for future in [pool.submit(worker, tree) for tree in trees]:
                future.result()  # a stale mutant's SystemExit surfaces here
    if survivors:
        raise SystemExit(
            f"{len(survivors)} guard(s) whose removal no test notices: " + "; ".join(m.name for m in survivors)
        )
    print(f"all {len(chosen)} guards are caught by their tests")


if __name__ == "__main__":
    main()
