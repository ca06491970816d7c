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
//
// MultiHeadAttention as Keras 3 computes it over a sequence (attention over
// axis 1), with Keras's weights: query, key and value kernels [d, heads, k]
// and biases [heads, k], the output kernel [heads, k_v, d] and bias [d]:
//   Q = (q Wq + bq) / √k, K = key Wk + bk, V = v Wv + bv (per head)
//   out = Σ_heads softmax(Q Kᵀ + mask) V Wo + bo
//
// Conv1D with padding="causal" (TF.js 4.22 has no kernel for it): the
// sequence is padded at its start with (kernel - 1) x dilation zero steps and
// convolved "valid", as Keras computes it; other paddings go on to TF.js's.
//
// Keras passes use_causal_mask at the call; TF.js drops call arguments when
// it runs a model, so `crowdtrain import-keras` moves it into the layer's
// config (use_causal_mask), where this layer reads it. No dropout.

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
  tf.serialization.registerClass(multiHeadAttention(tf));
  tf.serialization.registerClass(causalConv1D(tf));
}

/** TF.js's Conv1D, with Keras's causal padding (see the top of this file). */
function causalConv1D(tf) {
  const Conv1D = classOf(tf.layers.conv1d({ filters: 1, kernelSize: 1 }));
  const one = (value) => (Array.isArray(value) ? value[0] : value ?? 1);

  class KerasConv1D extends Conv1D {
    constructor(args) {
      const causal = args.padding === 'causal';
      super(causal ? { ...args, padding: 'valid' } : args);
      this.causal = causal ? (one(args.kernelSize) - 1) * one(args.dilationRate) : 0;
    }

    call(inputs, kwargs) {
      if (!this.causal) return super.call(inputs, kwargs);
      return tf.tidy(() => {
        const x = Array.isArray(inputs) ? inputs[0] : inputs;
        return super.call(tf.pad(x, [[0, 0], [this.causal, 0], [0, 0]]), kwargs);
      });
    }

    computeOutputShape(inputShape) {
      if (!this.causal) return super.computeOutputShape(inputShape);
      const [batch, steps, ...rest] = inputShape;
      return super.computeOutputShape([batch, steps === null ? null : steps + this.causal, ...rest]);
    }

    getConfig() {
      return this.causal ? { ...super.getConfig(), padding: 'causal' } : super.getConfig();
    }
  }
  KerasConv1D.className = 'Conv1D';
  return KerasConv1D;
}

/** A Keras 3 MultiHeadAttention layer for TF.js (see the top of this file). */
function multiHeadAttention(tf) {
  class MultiHeadAttention extends tf.layers.Layer {
    constructor(args) {
      super(args);
      if (args.dropout) throw new Error('MultiHeadAttention with dropout is not supported: build it with dropout=0');
      this.numHeads = args.numHeads;
      this.keyDim = args.keyDim;
      this.valueDim = args.valueDim ?? args.keyDim;
      this.useBias = args.useBias ?? true;
      this.useCausalMask = args.useCausalMask === true;
    }

    build(inputShape) {
      const [query, value, key = value] = inputShape;
      const width = (shape) => shape[shape.length - 1];
      this.outputDim = width(query);
      const weight = (name, shape) => this.addWeight(name, shape, 'float32', tf.initializers.zeros(), null, true);
      const heads = this.numHeads;
      this.projections = [['query', query, this.keyDim], ['key', key, this.keyDim], ['value', value, this.valueDim]]
        .map(([name, shape, size]) => ({
          kernel: weight(`${name}/kernel`, [width(shape), heads, size]),
          bias: this.useBias ? weight(`${name}/bias`, [heads, size]) : null,
        }));
      this.projectOut = {
        kernel: weight('attention_output/kernel', [heads, this.valueDim, this.outputDim]),
        bias: this.useBias ? weight('attention_output/bias', [this.outputDim]) : null,
      };
      this.built = true;
    }

    computeOutputShape(inputShape) {
      return inputShape[0].slice(); // the query's (Keras's output_shape=None)
    }

    call(inputs) {
      return tf.tidy(() => {
        const [query, value, key = value] = inputs;
        // [batch, time, d] -> [batch, heads, time, size]
        const project = (x, { kernel, bias }) => {
          const [d, heads, size] = kernel.shape;
          let y = tf.reshape(tf.matMul(tf.reshape(x, [-1, d]), tf.reshape(kernel.read(), [d, heads * size])),
            [-1, x.shape[1], heads, size]);
          if (bias) y = tf.add(y, bias.read());
          return tf.transpose(y, [0, 2, 1, 3]);
        };
        const [wq, wk, wv] = this.projections;
        const q = tf.mul(project(query, wq), 1 / Math.sqrt(this.keyDim));
        let scores = tf.matMul(q, project(key, wk), false, true);
        if (this.useCausalMask) {
          const [rows, columns] = scores.shape.slice(2);
          const allowed = tf.linalg.bandPart(tf.ones([rows, columns]), -1, 0);
          scores = tf.add(scores, tf.mul(tf.sub(1, allowed), -1e9));
        }
        const mixed = tf.transpose(tf.matMul(tf.softmax(scores, -1), project(value, wv)), [0, 2, 1, 3]);
        const width = this.numHeads * this.valueDim;
        let out = tf.matMul(tf.reshape(mixed, [-1, width]), tf.reshape(this.projectOut.kernel.read(), [width, this.outputDim]));
        if (this.projectOut.bias) out = tf.add(out, this.projectOut.bias.read());
        return tf.reshape(out, [-1, query.shape[1], this.outputDim]);
      });
    }

    getConfig() {
      return {
        ...super.getConfig(),
        numHeads: this.numHeads,
        keyDim: this.keyDim,
        valueDim: this.valueDim,
        useBias: this.useBias,
        useCausalMask: this.useCausalMask,
      };
    }
  }
  MultiHeadAttention.className = 'MultiHeadAttention';
  return MultiHeadAttention;
}
