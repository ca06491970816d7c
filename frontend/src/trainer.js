// Gradients of one batch with TF.js, on the model version a lease names.
// Used by the volunteer's Web Worker and, in tests, by TF.js under Node.
import { fetchBytes } from './api.js';
import { getCodec } from './codecs.js';
import { registerLayers } from './layers.js';
import { continues } from './trajectory.js';

// A batch file's value types (chalicelib/domain/sections.py BATCH_DTYPES). TF.js has no
// uint8 tensors: uint8 token ids become int32 tensors.
// Losses whose predictions are class scores: a held-out evaluation reports accuracy for these.
export const CLASSIFIER_LOSSES = ['sparseCategoricalCrossentropy', 'categoricalCrossentropy'];

export const TYPED = { int32: Int32Array, float32: Float32Array, uint8: Uint8Array };
const TENSOR_DTYPE = { int32: 'int32', float32: 'float32', uint8: 'int32' };
// The server writes every version as model.json + this one shard (chalicelib/domain/weights.py).
const SHARD = 'weights.bin';
// A trainer's version when its model holds its own weights: the end of its last local steps (src/trajectory.js).
const OWN = 'own';
// model.json documents read, by URL (a version's is immutable): the last few.
const DOCUMENTS = new Map();

export const sizeOf = (shape) => shape.reduce((a, b) => a * b, 1);
/** The bytes of a version's weights shard (float32) for the manifest specs. */
export const weightsBytes = (specs) => specs.reduce((n, spec) => n + 4 * sizeOf(spec.shape), 0);
/** A leased version's one weights shard, beside its model.json. */
export const shardUrl = (task) => task.model_url.slice(0, task.model_url.lastIndexOf('/') + 1) + SHARD;

/** Split a batch file (x then y, little-endian) into typed arrays, following `spec.dataset`. */
export function parseBatch(bytes, dataset) {
  const xBytes = sizeOf(dataset.x.shape) * TYPED[dataset.x.dtype].BYTES_PER_ELEMENT;
  const yBytes = sizeOf(dataset.y.shape) * TYPED[dataset.y.dtype].BYTES_PER_ELEMENT;
  if (bytes.byteLength !== xBytes + yBytes) throw new Error(`batch is ${bytes.byteLength} bytes, expected ${xBytes + yBytes}`);
  // copies: aligned for each half's type, little-endian on every browser we run on
  return {
    x: new TYPED[dataset.x.dtype](bytes.slice(0, xBytes).buffer),
    y: new TYPED[dataset.y.dtype](bytes.slice(xBytes).buffer),
  };
}

/**
 * A parsed batch as micro-batches of `dataset.micro_batch` samples (the whole
 * batch when unset): views of x and y with their layouts, and each part's
 * share of the batch, the weight of its mean loss and gradient.
 */
export function microBatches({ x, y }, dataset) {
  const size = dataset.x.shape[0];
  const step = dataset.micro_batch || size;
  const view = (values, layout, start) => {
    const per = sizeOf(layout.shape.slice(1));
    return { values: values.subarray(start * per, (start + step) * per), layout: { ...layout, shape: [step, ...layout.shape.slice(1)] } };
  };
  const parts = [];
  for (let start = 0; start < size; start += step) {
    parts.push({ x: view(x, dataset.x, start), y: view(y, dataset.y, start), share: step / size });
  }
  return parts;
}

/** Split one weights shard into tensors' values following the manifest specs. */
export function splitWeights(bytes, specs) {
  const copy = bytes.slice().buffer;
  let offset = 0;
  return specs.map((spec) => {
    const n = sizeOf(spec.shape);
    const values = new Float32Array(copy, offset, n);
    offset += 4 * n;
    return values;
  });
}

/** A TF.js optimizer from a spec's `{name, ...settings}` (chalicelib/domain/optimizers.py names them alike). */
export function localOptimizer(tf, { name, ...s }) {
  switch (name) {
    case 'sgd': return tf.train.sgd(s.learning_rate);
    case 'momentum': return tf.train.momentum(s.learning_rate, s.momentum, s.use_nesterov);
    case 'adam': return tf.train.adam(s.learning_rate, s.beta1, s.beta2, s.epsilon);
    case 'rmsprop': return tf.train.rmsprop(s.learning_rate, s.decay, s.momentum, s.epsilon, s.centered);
    default: throw new Error(`unknown local optimizer ${name}`);
  }
}

/** Set a TF.js optimizer's learning rate: sgd and momentum through their setter, adam and rmsprop read the field each step. */
export function setLearningRate(optimizer, rate) {
  if (typeof optimizer.setLearningRate === 'function') optimizer.setLearningRate(rate);
  else optimizer.learningRate = rate;
}

export class Trainer {
  constructor(tf, fetchImpl) {
    registerLayers(tf); // Keras's layers TF.js lacks, before any model loads
    this.tf = tf;
    this.fetch = fetchImpl;
    this.model = null;
    this.jobId = null;
    this.version = -1;
    this.inner = null; // the local optimizer kept across tasks (local_steps.keep_state)
    this.stash = null; // its own weights, kept while an evaluation loads a version
  }

  /** Drop the model and a kept local optimizer (built again at the next prepare, e.g. on another backend). */
  forget() {
    this.dropInner();
    this.dropStash();
    if (this.model) this.model.dispose();
    this.model = null;
    this.jobId = null;
    this.version = -1;
  }

  /**
   * Make the model match the lease's job and version; returns what had to be
   * fetched ('model', 'weights'), 'cached', or 'continued': with `keep`, a
   * training task starts from this trainer's own weights (its last local
   * steps' end, src/trajectory.js says when they stand for the version).
   * `shard`: the version's weights, fetched already (then not fetched again).
   */
  async prepare(task, keep = false, shard = null) {
    const { tf } = this;
    const training = task.kind !== 'evaluate';
    if (this.jobId !== task.job_id) {
      this.dropInner(); // a kept local optimizer belongs to one job
      this.dropStash();
      if (this.model) this.model.dispose();
      // The topology is built once per job (slow for LSTMs); new versions only swap weights.
      this.model = await this.load(task.model_url, shard);
      this.jobId = task.job_id;
      this.version = task.base_version;
      this.bind(task.spec.weights);
      return 'model';
    }
    if (training && keep && this.stash) { // back from an evaluation: its own weights again
      this.model.weights.forEach((w, k) => w.write(this.stash[k]));
      this.dropStash();
      this.version = OWN;
    }
    if (training && keep && this.version === OWN) return 'continued';
    if (!training && this.version === OWN && !this.stash) this.stash = this.model.weights.map((w) => tf.clone(w.read()));
    if (training) this.dropStash();
    if (this.version !== task.base_version) {
      const values = splitWeights(shard || await fetchBytes(shardUrl(task), this.fetch), task.spec.weights);
      const byName = new Map(task.spec.weights.map((spec, i) => [spec.name, tf.tensor(values[i], spec.shape)]));
      this.model.setWeights(this.model.weights.map((w) => byName.get(w.originalName)));
      byName.forEach((t) => t.dispose());
      this.version = task.base_version;
      return 'weights';
    }
    return 'cached';
  }

  /** A version's model: TF.js reads model.json and its shard, or only model.json where the shard is here. */
  async load(url, shard) {
    const { tf } = this;
    if (!shard) return tf.loadLayersModel(url);
    if (!DOCUMENTS.has(url)) { // the canary's trials build the same model on each backend: one request
      DOCUMENTS.set(url, fetchBytes(url, this.fetch).then((bytes) => JSON.parse(new TextDecoder().decode(bytes))));
      DOCUMENTS.get(url).catch(() => DOCUMENTS.delete(url));
      while (DOCUMENTS.size > 4) DOCUMENTS.delete(DOCUMENTS.keys().next().value);
    }
    const document = await DOCUMENTS.get(url);
    return tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: document.modelTopology,
      weightSpecs: document.weightsManifest.flatMap((group) => group.weights),
      weightData: shard.slice().buffer,
    }));
  }

  dropStash() {
    this.stash?.forEach((t) => t.dispose());
    this.stash = null;
  }

  dropInner() {
    this.inner?.dispose();
    this.inner = null;
  }

  /**
   * Each manifest weight's index among the model's weights. A weight the spec
   * marks as a layer's own statistic (`state`: BatchNormalization's moving
   * mean and variance) must be one the layer updates itself, and every other
   * one trainable: a result carries a gradient for the one, the change the
   * layer made for the other (chalicelib/domain/statistics.py folds it).
   */
  bind(specs) {
    const { weights } = this.model;
    this.order = specs.map((spec) => {
      const index = weights.findIndex((w) => w.originalName === spec.name);
      if (index < 0) throw new Error(`weight ${spec.name} is not in this model`);
      if (weights[index].trainable === Boolean(spec.state)) {
        throw new Error(`weight ${spec.name} is not ${spec.state ? 'a statistic its layer updates itself' : 'trainable'} in this model`);
      }
      return index;
    });
    this.statistics = this.order.filter((k, i) => specs[i].state);
  }

  loss(spec, ys, preds) {
    const { tf } = this;
    switch (spec.loss) {
      case 'sparseCategoricalCrossentropy': {
        const depth = preds.shape[preds.shape.length - 1];
        return tf.metrics.categoricalCrossentropy(tf.oneHot(ys.toInt(), depth).toFloat(), preds).mean();
      }
      case 'categoricalCrossentropy':
        return tf.metrics.categoricalCrossentropy(ys, preds).mean();
      case 'meanSquaredError':
        return tf.losses.meanSquaredError(ys, preds);
      default:
        throw new Error(`unsupported loss ${spec.loss}`);
    }
  }

  inputs({ values, layout }) {
    const dtype = TENSOR_DTYPE[layout.dtype];
    const t = this.tf.tensor(layout.dtype === 'uint8' ? Int32Array.from(values) : values, layout.shape, dtype);
    return layout.one_hot ? this.tf.oneHot(t, layout.one_hot).toFloat() : t;
  }

  /**
   * The mean loss of a batch and its gradient, one Float32Array per manifest weight.
   * Computed `spec.dataset.micro_batch` samples at a time (local accumulation:
   * memory for one micro-batch, whatever the batch size), awaiting `between`
   * after each but the last, where the loop sends its heartbeats.
   */
  async gradient(batchBytes, spec, between = async () => {}) {
    const { tf } = this;
    const parts = microBatches(parseBatch(batchBytes, spec.dataset), spec.dataset);
    const variables = this.model.weights.map((w) => w.val);
    const trained = this.model.trainableWeights.map((w) => w.val);
    const before = new Map(this.statistics.map((k) => [k, tf.clone(variables[k])]));
    let loss = 0;
    let sums = null;
    try {
      for (const [i, { x, y, share }] of parts.entries()) {
        const part = tf.tidy(() => {
          const { value, grads } = tf.variableGrads(
            () => this.loss(spec, this.inputs(y), this.model.apply(this.inputs(x), { training: true })), trained);
          const of = (k) => (before.has(k) ? new Float32Array(variables[k].size) : grads[variables[k].name].dataSync());
          return { loss: value.dataSync()[0], grads: this.order.map(of) };
        });
        loss += share * part.loss;
        if (sums === null) sums = part.grads.map((g) => Float32Array.from(g, (v) => share * v));
        else part.grads.forEach((g, k) => { for (let j = 0; j < g.length; j += 1) sums[k][j] += share * g[j]; });
        if (i < parts.length - 1) await between();
      }
      // a statistic's entry is the change its layer made over the batch
      this.order.forEach((k, i) => {
        if (before.has(k)) sums[i] = tf.tidy(() => tf.sub(before.get(k), variables[k]).dataSync());
      });
    } finally { // the model keeps the version's statistics, whatever happened
      before.forEach((t, k) => { variables[k].assign(t); t.dispose(); });
    }
    return { loss, grads: sums };
  }

  /**
   * Local steps: one step of the job's local optimizer (TF.js's own: fresh
   * for each task, or with `local_steps.keep_state` the same one across this
   * trainer's tasks of the job, its moments carried over) on each batch in
   * turn, from the weights prepared; returns the mean loss and the
   * pseudo-gradient θ_before − θ_after, one Float32Array per manifest weight.
   * The model is put back to the version leased afterwards (the next task may
   * lease it again), except in a job where the page follows its own path
   * (src/trajectory.js): there it keeps its own weights. `rate` is the task's
   * inner learning rate (the lease's `local_learning_rate`, which follows
   * `local_steps.decay_to`; the optimizer's own when absent). `between` is
   * awaited between steps.
   */
  async localSteps(batches, spec, rate = undefined, between = async () => {}) {
    const { tf } = this;
    const variables = this.model.weights.map((w) => w.val); // a layer's own statistics move too, and travel
    const start = variables.map((v) => tf.clone(v));
    const keep = spec.local_steps.keep_state === true;
    const own = continues(spec);
    const settings = { ...spec.local_steps.optimizer, ...(rate === undefined ? {} : { learning_rate: rate }) };
    if (!keep || !this.inner) this.inner = localOptimizer(tf, settings);
    const optimizer = this.inner;
    setLearningRate(optimizer, settings.learning_rate); // a kept optimizer follows the schedule too
    if (own) this.version = OWN; // from the first step on, the model is no version's
    let loss = 0;
    try {
      for (const [i, bytes] of batches.entries()) {
        const { x, y } = parseBatch(bytes, spec.dataset);
        const cost = optimizer.minimize(() => this.loss(spec, this.inputs({ values: y, layout: spec.dataset.y }),
          this.model.apply(this.inputs({ values: x, layout: spec.dataset.x }), { training: true })), true,
          this.model.trainableWeights.map((w) => w.val));
        loss += cost.dataSync()[0] / batches.length;
        cost.dispose();
        if (i < batches.length - 1) await between();
      }
    } catch (err) { // a step or a heartbeat failed: nothing of the task is kept, as with a non-finite loss
      this.discard(variables, start, own);
      start.forEach((t) => t.dispose());
      throw err;
    }
    let grads = this.order.map((k) => tf.tidy(() => tf.sub(start[k], variables[k]).dataSync()));
    if (!Number.isFinite(loss)) {
      this.discard(variables, start, own);
    } else if (own) {
      // the page's weights become exactly what the fold makes of the move it is sent: start − decode(encode(move))
      const codec = getCodec(spec.codec || 'fp32');
      grads = codec.decode(codec.encode(grads), grads.map((g) => g.length));
      this.order.forEach((k, i) => tf.tidy(() => variables[k].assign(tf.sub(start[k], tf.tensor(grads[i], start[k].shape)))));
    } else {
      variables.forEach((v, k) => v.assign(start[k]));
    }
    start.forEach((t) => t.dispose());
    if (!keep && this.inner) {
      optimizer.dispose();
      this.inner = null;
    }
    return { loss, grads };
  }

  /** Nothing of a task's local steps is kept: not the weights, not the optimizer's state, not the page's own path. */
  discard(variables, start, own) {
    variables.forEach((v, k) => v.assign(start[k]));
    this.version = own ? null : this.version;
    this.dropInner();
  }

  /** The share of a batch whose most likely class is its label (a classifier's held-out accuracy). */
  accuracy(batchBytes, spec) {
    const { tf } = this;
    return microBatches(parseBatch(batchBytes, spec.dataset), spec.dataset).reduce((sum, { x, y, share }) => sum + share * tf.tidy(
      () => tf.equal(this.model.predict(this.inputs(x)).argMax(-1), this.inputs(y).toInt()).toFloat().mean().dataSync()[0]), 0);
  }

  /**
   * A held-out evaluation task's answer: the mean loss over its batches and,
   * for a classifier, the mean accuracy (chalicelib/tasks/evaluations.py).
   */
  async heldOut(batches, spec) {
    const mean = (f) => batches.reduce((sum, b) => sum + f(b), 0) / batches.length;
    const loss = mean((b) => this.evaluate(b, spec));
    return CLASSIFIER_LOSSES.includes(spec.loss) ? { loss, accuracy: mean((b) => this.accuracy(b, spec)) } : { loss };
  }

  /** The mean loss of a batch, no gradient (validation), a micro-batch at a time. */
  evaluate(batchBytes, spec) {
    const { tf } = this;
    return microBatches(parseBatch(batchBytes, spec.dataset), spec.dataset).reduce((sum, { x, y, share }) => sum + share * tf.tidy(
      () => this.loss(spec, this.inputs(y), this.model.predict(this.inputs(x))).dataSync()[0]), 0);
  }
}

