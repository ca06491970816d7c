// A volunteer's own path through a job whose versions are its results'
// moves summed one at a time (plain SGD at rate 1, one result an update, the
// mean of one, unreplicated, local steps with kept state). There a page that
// starts each task from its own weights, not from the version leased, trains
// exactly like one process running the same optimizer: a pipelined page's
// next task is leased before its last result is folded, and starting it from
// that older version would apply the same stretch of training twice.
//
// The page knows its results by tag (the lease's `result_tag`); a lease names
// the results its base version folded (`base_folded`). The page's weights are
// the version it last loaded (the anchor) plus its own moves the anchor lacks;
// they stand for a newer version only when the versions between are its own
// moves, in order. Anything else (another volunteer's result, a lost one, an
// evaluation that loaded another version) and the page loads the version.

/** Whether a job's updates are its results' moves summed one by one (above). */
export function continues(spec) {
  const { optimizer = {}, aggregation = {}, replication = {} } = spec;
  return spec.local_steps?.keep_state === true && optimizer.name === 'sgd' && optimizer.learning_rate === 1
    && spec.gradients_per_update === 1 && (aggregation.name ?? 'mean') === 'mean' && (replication.copies ?? 1) === 1;
}

export class Trajectory {
  constructor() { this.reset(null, -1); }

  /** Forget the path: the model holds `version` of `jobId` exactly (or, with -1, nothing known). */
  reset(jobId, version) {
    this.jobId = jobId;
    this.anchor = version;
    this.moves = []; // tags of this page's results computed since the anchor, in order
  }

  /**
   * 'continue' where the page's own weights stand for the task's version
   * (the version is the anchor, or the anchor plus this page's first moves
   * and nothing else), else 'fetch'. `computing`: the tag of a result being
   * computed now (it will be the next move).
   */
  plan(task, computing = null) {
    if (task.kind !== 'train' || task.job_id !== this.jobId || this.anchor < 0 || !continues(task.spec)) return 'fetch';
    const moves = computing ? [...this.moves, computing] : this.moves;
    const k = task.base_version - this.anchor;
    if (k === 0) return 'continue';
    const folded = task.base_folded || [];
    return k > 0 && k <= moves.length && folded.length === 1 && folded[0] === moves[k - 1] ? 'continue' : 'fetch';
  }

  /** The trainer took the task's version: from its own weights (`kept`), or loaded exactly. */
  began(task, kept) {
    if (!kept || task.job_id !== this.jobId) {
      this.reset(task.job_id, task.base_version);
      return;
    }
    this.moves = this.moves.slice(task.base_version - this.anchor);
    this.anchor = task.base_version;
  }

  /** A result computed from the page's weights, which now include its move. */
  moved(tag) { this.moves.push(tag); }
}
