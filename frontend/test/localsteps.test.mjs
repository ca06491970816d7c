import assert from 'node:assert/strict';
import test from 'node:test';
import * as tf from '@tensorflow/tfjs';
import { lstmTrainer } from './helpers.mjs';
import { setLearningRate } from '../src/trainer.js';
import { getCodec } from '../src/codecs.js';
import { continues, Trajectory } from '../src/trajectory.js';

await tf.setBackend('cpu');

const VOCAB = 5;
const dataset = { micro_batch: 4, x: { shape: [4, 3], dtype: 'uint8', one_hot: VOCAB }, y: { shape: [4], dtype: 'uint8' } };
const spec = (optimizer) => ({ loss: 'sparseCategoricalCrossentropy', weights: [], dataset, local_steps: { steps: 3, optimizer } });
const batch = (seed) => Uint8Array.from({ length: 4 * 3 + 4 }, (_, i) => (i * 7 + seed) % VOCAB);

const trainer = () => lstmTrainer(tf, 3, VOCAB);

test('one local SGD step of rate 1 uploads the gradient itself, and the model goes back to the version leased', async () => {
  const t = trainer();
  const before = t.model.getWeights().map((w) => w.arraySync());
  const { grads } = await t.gradient(batch(1), { ...spec(), dataset });
  const local = await t.localSteps([batch(1)], spec({ name: 'sgd', learning_rate: 1 }));
  local.grads.forEach((g, k) => g.forEach((v, j) => assert.ok(Math.abs(v - grads[k][j]) < 1e-5)));
  assert.deepEqual(t.model.getWeights().map((w) => w.arraySync()), before);
});

test('local steps follow the optimizer over the batches in turn, between steps awaited, no tensor leaked', async () => {
  const t = trainer();
  const tensors = tf.memory().numTensors;
  let pauses = 0;
  const { loss, grads } = await t.localSteps([batch(1), batch(2), batch(3)], spec({ name: 'adam', learning_rate: 0.1 }),
    undefined, async () => { pauses += 1; });
  assert.equal(pauses, 2);
  assert.equal(tf.memory().numTensors, tensors, 'local steps leak no tensors');
  assert.ok(Number.isFinite(loss) && grads.some((g) => g.some((v) => v !== 0)));
  // the same steps by hand: the model after them is θ_leased − pseudo-gradient
  const reference = trainer();
  reference.model.setWeights(t.model.getWeights());
  const optimizer = tf.train.adam(0.1);
  for (const seed of [1, 2, 3]) {
    const bytes = batch(seed);
    optimizer.minimize(() => reference.loss(spec(), reference.inputs({ values: bytes.subarray(12), layout: dataset.y }),
      reference.model.apply(reference.inputs({ values: bytes.subarray(0, 12), layout: dataset.x }), { training: true })));
  }
  const start = t.model.getWeights().map((w) => w.dataSync());
  reference.model.getWeights().forEach((w, k) => w.dataSync().forEach((v, j) => assert.ok(Math.abs(start[k][j] - grads[k][j] - v) < 1e-5)));
});

test('with keep_state the local optimizer carries its moments into the next task; without, it starts fresh', async () => {
  const adam = { name: 'adam', learning_rate: 0.1 };
  const step = (t, optimizer, seed) => {
    const bytes = batch(seed);
    optimizer.minimize(() => t.loss(spec(), t.inputs({ values: bytes.subarray(12), layout: dataset.y }),
      t.model.apply(t.inputs({ values: bytes.subarray(0, 12), layout: dataset.x }), { training: true })));
  };
  for (const keep of [true, false]) {
    const t = trainer();
    const leased = t.model.getWeights().map((w) => w.clone());
    const task = { ...spec(adam), local_steps: { steps: 1, optimizer: adam, keep_state: keep } };
    await t.localSteps([batch(1)], task);
    const { grads } = await t.localSteps([batch(2)], task); // the next task, on the same version
    // by hand: one optimizer over both tasks, the model back at the version leased between them
    const reference = trainer();
    reference.model.setWeights(leased);
    const optimizer = tf.train.adam(0.1);
    if (keep) {
      step(reference, optimizer, 1);
      reference.model.setWeights(leased);
    }
    step(reference, optimizer, 2);
    const start = leased.map((w) => w.dataSync());
    const worst = Math.max(...reference.model.getWeights().map((w, k) => Math.max(...Array.from(w.dataSync(),
      (v, j) => Math.abs(start[k][j] - grads[k][j] - v)))));
    assert.ok(worst < 1e-5, `keep_state ${keep}: off by ${worst}`);
  }
});

test("the task's inner learning rate replaces the optimizer's, for a fresh and for a kept optimizer", async () => {
  for (const [name, keep] of [['sgd', false], ['adam', false], ['adam', true], ['momentum', true]]) {
    const settings = { name, learning_rate: 0.5, momentum: 0.9, use_nesterov: false };
    const task = { ...spec(settings), local_steps: { steps: 2, optimizer: settings, keep_state: keep } };
    const t = trainer();
    const leased = t.model.getWeights().map((w) => w.clone());
    if (keep) await t.localSteps([batch(3)], task, 0.5); // a first task at the optimizer's own rate
    const { grads } = await t.localSteps([batch(1), batch(2)], task, 0.05);
    // by hand: the same optimizer, its rate 0.05 for the second task
    const reference = trainer();
    reference.model.setWeights(leased);
    const optimizer = { sgd: () => tf.train.sgd(0.5), adam: () => tf.train.adam(0.5), momentum: () => tf.train.momentum(0.5, 0.9) }[name]();
    const step = (seed) => {
      const bytes = batch(seed);
      optimizer.minimize(() => reference.loss(spec(), reference.inputs({ values: bytes.subarray(12), layout: dataset.y }),
        reference.model.apply(reference.inputs({ values: bytes.subarray(0, 12), layout: dataset.x }), { training: true })));
    };
    if (keep) { step(3); reference.model.setWeights(leased); }
    setLearningRate(optimizer, 0.05);
    step(1);
    step(2);
    const start = leased.map((w) => w.dataSync());
    const worst = Math.max(...reference.model.getWeights().map((w, k) => Math.max(...Array.from(w.dataSync(),
      (v, j) => Math.abs(start[k][j] - grads[k][j] - v)))));
    assert.ok(worst < 1e-5, `${name}${keep ? ', kept' : ''}: ${worst}`);
    // and not the optimizer's own rate
    const own = await trainer().localSteps([batch(1), batch(2)], { ...task, local_steps: { ...task.local_steps, keep_state: false } });
    assert.ok(own.grads.some((g, k) => g.some((v, j) => Math.abs(v - grads[k][j]) > 1e-4)));
  }
});

for (const codec of ['fp32', 'fp16']) {
test(`a pipelined volunteer that follows its own path trains exactly like one process (${codec}), an evaluation between`, async () => {
  const adam = { name: 'adam', learning_rate: 0.1 };
  const t = trainer();
  const weights = t.model.weights.map((w) => ({ name: w.originalName, shape: w.shape }));
  const job = { ...spec(adam), weights, optimizer: { name: 'sgd', learning_rate: 1 }, gradients_per_update: 1,
    local_steps: { steps: 2, optimizer: adam, keep_state: true }, codec };
  assert.ok(continues(job));
  const wire = getCodec(codec); // what the fold applies is what the codec carried
  // the server: version n + 1 = version n − the result folded (SGD at rate 1, one result an update)
  const versions = [t.model.getWeights().map((w) => Float32Array.from(w.dataSync()))];
  const folded = [undefined];
  let fetches = 0;
  t.fetch = async (url) => {
    fetches += 1;
    const parts = versions[Number(url.split('/').at(-2))];
    const flat = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => { flat.set(p, at); return at + p.length; }, 0);
    return { ok: true, arrayBuffer: async () => flat.buffer };
  };
  const fold = (tag, grads) => {
    const sent = wire.decode(wire.encode(grads), grads.map((g) => g.length));
    versions.push(versions.at(-1).map((w, k) => w.map((v, j) => Math.fround(v - sent[k][j]))));
    folded.push([tag]);
  };
  const lease = (tag, kind = 'train', version = versions.length - 1) => ({
    kind, job_id: 'j', base_version: version, model_url: `jobs/j/versions/${version}/model.json`,
    result_tag: tag, base_folded: folded[version], spec: job });
  t.jobId = 'j';
  t.version = 0;
  const path = new Trajectory();
  path.reset('j', 0);
  const run = async (task, seeds) => {
    const plan = path.plan(task);
    assert.equal(plan, 'continue', `task ${task.result_tag} on version ${task.base_version}`);
    const fetched = await t.prepare(task, true);
    path.began(task, fetched === 'continued' || fetched === 'cached');
    const { grads } = await t.localSteps(seeds.map(batch), job);
    path.moved(task.result_tag);
    return grads;
  };
  // each task is leased one ahead, before the result before it is folded
  const first = lease('a');
  const second = lease('b');
  const a = await run(first, [1, 2]);
  fold('a', a);
  const b = await run(second, [3, 4]); // on version 0, which lacks a: the page's own weights have it
  assert.equal(await t.prepare(lease(null, 'evaluate', 1)), 'weights'); // a held-out check of version 1 between
  const third = lease('c'); // version 1 is a alone
  fold('b', b);
  const c = await run(third, [1, 3]);
  const fourth = lease('d'); // version 2 is b alone
  fold('c', c);
  fold('d', await run(fourth, [2, 4]));
  assert.equal(fetches, 1, 'only the evaluation fetched a version');
  // one process: one optimizer over the same batches in turn
  const reference = trainer();
  reference.model.setWeights(versions[0].map((v, k) => tf.tensor(v, weights[k].shape)));
  const optimizer = tf.train.adam(0.1);
  for (const seed of [1, 2, 3, 4, 1, 3, 2, 4]) {
    const bytes = batch(seed);
    optimizer.minimize(() => reference.loss(spec(), reference.inputs({ values: bytes.subarray(12), layout: dataset.y }),
      reference.model.apply(reference.inputs({ values: bytes.subarray(0, 12), layout: dataset.x }), { training: true })));
  }
  const worst = Math.max(...reference.model.getWeights().map((w, k) => Math.max(...Array.from(w.dataSync(),
    (v, j) => Math.abs(versions.at(-1)[k][j] - v)))));
  // fp16 rounds each move (about 1e-4 of it here): one process's Adam, to that
  assert.ok(worst < (codec === 'fp32' ? 1e-5 : 1e-3), `the job's last version is off one process's weights by ${worst}`);
  // and the page's own weights are the job's last version, bit for bit: it moved by what the fold applied
  const own = t.model.getWeights().map((w) => w.dataSync());
  assert.deepEqual(own.map((w) => Array.from(w)), versions.at(-1).map((w) => Array.from(w)));
});
}

test("a version with another volunteer's result in it, or a move lost, and the page loads the version", () => {
  const job = { local_steps: { keep_state: true }, optimizer: { name: 'sgd', learning_rate: 1 }, gradients_per_update: 1 };
  const task = (version, folded) => ({ kind: 'train', job_id: 'j', base_version: version, base_folded: folded, spec: job });
  const path = new Trajectory();
  assert.equal(path.plan(task(0)), 'fetch', 'nothing known yet');
  path.reset('j', 3);
  path.moved('a');
  path.moved('b');
  assert.equal(path.plan(task(3, ['z'])), 'continue');
  assert.equal(path.plan(task(4, ['a'])), 'continue');
  assert.equal(path.plan(task(5, ['b'])), 'continue', 'versions 4 and 5 are a and b');
  assert.equal(path.plan(task(6, ['c']), 'c'), 'continue', 'c is computing now');
  assert.equal(path.plan(task(4, ['x'])), 'fetch', "version 4 is another volunteer's result");
  assert.equal(path.plan(task(5, ['a'])), 'fetch', 'version 5 is a, so version 4 was not');
  assert.equal(path.plan(task(5, ['a', 'b'])), 'fetch', 'an update of two results');
  assert.equal(path.plan(task(6, ['c'])), 'fetch', 'more versions than moves');
  for (const other of [{ gradients_per_update: 2 }, { optimizer: { name: 'sgd', learning_rate: 0.5 } },
    { optimizer: { name: 'adam', learning_rate: 1 } }, { local_steps: { keep_state: false } },
    { replication: { copies: 2 } }, { aggregation: { name: 'clipped_mean' } }]) {
    assert.equal(path.plan({ ...task(3), spec: { ...job, ...other } }), 'fetch', JSON.stringify(other));
  }
  assert.equal(path.plan({ ...task(3), kind: 'evaluate' }), 'fetch');
  path.began(task(4, ['a']), true);
  assert.deepEqual([path.anchor, path.moves], [4, ['b']]);
  path.began(task(9, ['q']), false);
  assert.deepEqual([path.anchor, path.moves], [9, []]);
});
