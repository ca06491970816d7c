// Keras layers TF.js 4.22 cannot build, registered under Keras's class names
// so that a job's model.json loads as Keras wrote it. Call registerLayers(tf)
// before loading a model (the Trainer does): it is idempotent per TF.js copy.
//
// GRU with reset_after=True, Keras 3's default: TF.js's GRUCell refuses it.
// The reset gate multiplies the recurrent projection after its bias, which
// is why the bias is two rows (input, recurrent) of 3 x units, as in Keras:
//   z = σ(x Wz + bz + h Uz + b'z)   r = σ(x Wr + br + h Ur + b'r)
//   ĥ = tanh(x Wh + bh + r ⊙ (h Uh + b'h))   h ← z ⊙ h + (1 − z) ⊙ ĥ
// reset_after=False goes on to TF.js's own cell.

const DONE = new WeakSet();

/** The class of what a TF.js layer factory builds (TF.js exports the factories, not the classes). */
const classOf = (instance) => Object.getPrototypeOf(instance).constructor;

export function registerLayers(tf) {
  if (DONE.has(tf.serialization)) return;
  DONE.add(tf.serialization);
  const GRUCell = classOf(tf.layers.gruCell({ units: 1 }));
  const GRU = classOf(tf.layers.gru({ units: 1 }));

  class ResetAfterGRUCell extends GRUCell {
    constructor(args) {
      if (args.dropout || args.recurrentDropout) {
        throw new Error('GRU with reset_after=True and dropout is not supported: build it with dropout=0');
      }
      super({ ...args, resetAfter: false });
    }

    build(inputShape) {
      const shape = Array.isArray(inputShape[0]) ? inputShape[0] : inputShape;
      const inputDim = shape[shape.length - 1];
      const width = this.units * 3;
      this.kernel = this.addWeight('kernel', [inputDim, width], null, this.kernelInitializer,
        this.kernelRegularizer, true, this.kernelConstraint);
      this.recurrentKernel = this.addWeight('recurrent_kernel', [this.units, width], null,
        this.recurrentInitializer, this.recurrentRegularizer, true, this.recurrentConstraint);
      this.bias = this.useBias ? this.addWeight('bias', [2, width], null, this.biasInitializer,
        this.biasRegularizer, true, this.biasConstraint) : null;
      this.built = true;
    }

    call(inputs) {
      return tf.tidy(() => {
        const [x, h] = inputs;
        let fromInput = tf.matMul(x, this.kernel.read());
        let fromState = tf.matMul(h, this.recurrentKernel.read());
        if (this.bias) {
          const [inputBias, recurrentBias] = tf.unstack(this.bias.read());
          fromInput = tf.add(fromInput, inputBias);
          fromState = tf.add(fromState, recurrentBias);
        }
        const [xz, xr, xh] = tf.split(fromInput, 3, -1);
        const [hz, hr, hh] = tf.split(fromState, 3, -1);
        const z = this.recurrentActivation.apply(tf.add(xz, hz));
        const r = this.recurrentActivation.apply(tf.add(xr, hr));
        const candidate = this.activation.apply(tf.add(xh, tf.mul(r, hh)));
        const next = tf.add(tf.mul(z, h), tf.mul(tf.sub(1, z), candidate));
        return [next, next];
      });
    }

    getConfig() {
      return { ...super.getConfig(), resetAfter: true };
    }
  }

  class KerasGRU extends GRU {
    constructor(args) {
      super({ ...args, resetAfter: false });
      if (args.resetAfter) this.cell = new ResetAfterGRUCell(args);
    }
  }
  KerasGRU.className = 'GRU';
  tf.serialization.registerClass(KerasGRU);
}
