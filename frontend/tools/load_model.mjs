// Load a model `crowdtrain download` wrote (DIR/model.json and its weight shards) in Node with
// TF.js alone: `node frontend/tools/load_model.mjs DIR`. TF.js's `file://` loader needs
// @tensorflow/tfjs-node; this reads the files itself and hands them to tf.io.fromMemory.
// Prints one JSON line: the model's input and output shapes and its parameter count.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { registerLayers } from '../src/layers.js';

registerLayers(tf); // Keras 3's default GRU, which TF.js builds only with it

const dir = process.argv[2];
const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
const shards = json.weightsManifest.flatMap((group) => group.paths.map((path) => readFileSync(join(dir, path))));
const bytes = Buffer.concat(shards);
const weights = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const specs = json.weightsManifest.flatMap((group) => group.weights);
const model = await tf.loadLayersModel(
  tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: specs, weightData: weights }));
console.log(JSON.stringify({
  inputs: model.inputs.map((t) => t.shape), outputs: model.outputs.map((t) => t.shape), parameters: model.countParams(),
}));
