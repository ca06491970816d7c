// TF.js under Node as a reference for the Python tests. One command per run:
//   node tfjs_oracle.cjs optimize   < {optimizer, settings, shapes, weights, grads}  -> {steps: [[...], ...]}
//   node tfjs_oracle.cjs load URL   -> {names, shapes, values}   (tf.loadLayersModel over HTTP)
//   node tfjs_oracle.cjs save DIR   < {topology}  -> writes model.json + weights.bin as TF.js saves them
// Resolve @tensorflow/tfjs from frontend/node_modules (NODE_PATH is set by the tests).
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function readStdin() {
  return JSON.parse(fs.readFileSync(0, 'utf8'));
}

function makeOptimizer(name, s) {
  switch (name) {
    case 'sgd': return tf.train.sgd(s.learning_rate);
    case 'momentum': return tf.train.momentum(s.learning_rate, s.momentum, s.use_nesterov || false);
    case 'adam': return tf.train.adam(s.learning_rate, s.beta1, s.beta2, s.epsilon);
    case 'rmsprop': return tf.train.rmsprop(s.learning_rate, s.decay, s.momentum, s.epsilon, s.centered || false);
    default: throw new Error(`unknown optimizer ${name}`);
  }
}

async function optimize() {
  const job = readStdin();
  const vars = job.weights.map((w, i) => tf.variable(tf.tensor(w, job.shapes[i], 'float32'), true, `w${i}`));
  const opt = makeOptimizer(job.optimizer, job.settings);
  const steps = [];
  for (const grads of job.grads) {
    opt.applyGradients(vars.map((v, i) => ({ name: v.name, tensor: tf.tensor(grads[i], job.shapes[i], 'float32') })));
    steps.push(vars.map((v) => Array.from(v.dataSync())));
  }
  return { steps };
}

async function load(url) {
  const model = await tf.loadLayersModel(url);
  const weights = model.weights;
  return {
    names: weights.map((w) => w.originalName),
    shapes: weights.map((w) => w.shape),
    values: weights.map((w) => Array.from(w.read().dataSync())),
  };
}

async function save(dir) {
  const { topology } = readStdin();
  const model = await tf.models.modelFromJSON({ modelTopology: topology });
  const handler = tf.io.withSaveHandler(async (artifacts) => {
    const manifest = [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }];
    const doc = { format: 'layers-model', generatedBy: 'TensorFlow.js', convertedBy: null,
      modelTopology: artifacts.modelTopology, weightsManifest: manifest };
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(doc));
    fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(artifacts.weightData));
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  });
  await model.save(handler);
  return {
    names: model.weights.map((w) => w.originalName),
    values: model.weights.map((w) => Array.from(w.read().dataSync())),
  };
}

async function main() {
  await tf.setBackend('cpu');
  const [cmd, arg] = process.argv.slice(2);
  const commands = { optimize: () => optimize(), load: () => load(arg), save: () => save(arg) };
  if (!commands[cmd]) throw new Error(`usage: tfjs_oracle.cjs optimize|load URL|save DIR`);
  process.stdout.write(JSON.stringify(await commands[cmd]()));
}

main().catch((err) => { console.error(err.stack || String(err)); process.exit(1); });
