// Shared by the trainer's tests: a small LSTM over one-hot token ids, in a Trainer.
import { Trainer } from '../src/trainer.js';

export function lstmTrainer(tf, seqLen, vocab) {
  const model = tf.sequential();
  model.add(tf.layers.lstm({ units: 4, inputShape: [seqLen, vocab], recurrentInitializer: 'glorotUniform' }));
  model.add(tf.layers.dense({ units: vocab, activation: 'softmax' }));
  const trainer = new Trainer(tf);
  trainer.model = model;
  trainer.bind(model.weights.map((w) => ({ name: w.originalName })));
  return trainer;
}
