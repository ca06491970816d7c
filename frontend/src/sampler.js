// What a text job's model writes, for the volunteer page: a batch-1 copy of
// the model whose recurrent layers keep their state between calls, so sampling
// feeds the seed once and then one character per step. (Sliding a full window
// per character costs a forward pass of the whole sequence per character: over
// a minute at sequence 1,024 on wasm, while the worker can do nothing else.)
import { parseBatch } from './trainer.js';

/** The first sequence of a batch of token ids (the sample's seed), or null for other jobs. */
export function firstSequence(batchBytes, spec) {
  const { x } = spec.dataset;
  if (!x.one_hot || x.shape.length !== 2) return null;
  return Array.from(parseBatch(batchBytes, spec.dataset).x.subarray(0, x.shape[1]));
}

export class TextSampler {
  constructor(tf) {
    this.tf = tf;
    this.source = null;  // the trained model the stateful copy was built from
    this.copy = null;
  }

  /** The stateful copy of `model`, rebuilt when the model (the job) changes, weights taken each call. */
  async statefulCopy(model) {
    if (this.source !== model) {
      if (this.copy) this.copy.dispose();
      const topology = model.toJSON(null, false);
      const layers = topology.config.layers;
      const shape = layers?.[0]?.config?.batch_input_shape;
      if (topology.class_name !== 'Sequential' || !shape) throw new Error('text samples need a Sequential model with an input shape');
      layers[0].config.batch_input_shape = [1, null, ...shape.slice(2)];
      for (const layer of layers) if ('return_sequences' in layer.config) layer.config.stateful = true;
      this.copy = await this.tf.models.modelFromJSON({ modelTopology: topology });
      this.source = model;
    }
    this.copy.setWeights(model.getWeights());
    this.copy.resetStates();
    return this.copy;
  }

  /** Text `model` writes after `seed` (token ids), `length` characters of `alphabet`. */
  async sample(model, seed, length, alphabet, random = Math.random) {
    const { tf } = this;
    const depth = alphabet.length;
    const copy = await this.statefulCopy(model);
    const step = (ids) => tf.tidy(() => copy.predict(tf.oneHot(tf.tensor2d([ids], undefined, 'int32'), depth).toFloat()).dataSync());
    let probs = step(seed);
    let text = '';
    for (let i = 0; i < length; i += 1) {
      // temperature 0.6 keeps samples readable without looping on one character
      const weights = Array.from(probs, (p) => p ** (1 / 0.6));
      let pick = random() * weights.reduce((a, b) => a + b, 0);
      let id = 0;
      while (id < weights.length - 1 && (pick -= weights[id]) > 0) id += 1;
      text += alphabet[id] === '\u0000' ? '' : alphabet[id];
      if (i + 1 < length) probs = step([id]);
    }
    return text;
  }
}
