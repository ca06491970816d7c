"""Keras files in and out (crowdtrain/jobs/keras_files.py): Keras 3 `.keras`
and `.h5` models become TF.js files that TF.js loads and trains with the loss
Keras computes; TF.js files become a Keras 3 file with the same weights and
predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from chalicelib.domain.weights import WeightSpec, decode_tensors, encode_tensors, model_json
from crowdtrain.jobs.charlstm import VOCAB, CharLSTM
from crowdtrain.jobs.chartransformer import CharTransformer
from crowdtrain.jobs.check import check_in_tfjs, gradient_in_tfjs
from crowdtrain.jobs.corpus import kjv_text
from crowdtrain.jobs.digits import DigitsCNN
from crowdtrain.jobs.keras_files import KerasFileError, export_keras, import_keras, keras, weight_names


def keras_cnn(seed: int = 0, normalized: bool = False):
    """Conv2D (ReLU) -> pooling -> Dense softmax; `normalized`: as Keras users build CNNs,
    Conv2D -> BatchNormalization ("norm") -> ReLU."""
    k = keras()
    k.utils.set_random_seed(seed)
    if normalized:
        conv = [k.layers.Conv2D(8, 3, padding="same", name="conv"), k.layers.BatchNormalization(name="norm")]
        conv.append(k.layers.Activation("relu"))
    else:
        conv = [k.layers.Conv2D(8, 3, padding="same", activation="relu")]
    layers = [k.layers.MaxPooling2D(2), k.layers.Flatten(), k.layers.Dense(10, activation="softmax")]
    return k.Sequential([k.Input((8, 8, 1)), *conv, *layers])


def keras_text_model():
    """Functional: Embedding → LSTM → Dense over the char-LSTM template's token ids."""
    k = keras()
    ids = k.Input((40,), dtype="int32")
    out = k.layers.Dense(VOCAB, activation="softmax")(k.layers.LSTM(16)(k.layers.Embedding(VOCAB, 8)(ids)))
    return k.Model(ids, out)


def digits_batch():
    model = DigitsCNN()
    (x, y), _ = model.split(0)
    xb, yb = model.batches(x, y, 2)
    return model, xb[0], yb[0]


def keras_loss(model, x, y) -> float:
    probabilities = np.asarray(model.predict(x, verbose=0), np.float64)
    return float(-np.log(probabilities[np.arange(len(y)), y.reshape(-1)]).mean())


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_keras3_cnn_file_becomes_tfjs_files_that_tfjs_trains_with_keras_loss(tmp_path, suffix):
    source = tmp_path / f"cnn{suffix}"
    cnn = keras_cnn()
    cnn.save(source)
    document = json.loads(import_keras(source, tmp_path / "tfjs").read_text())
    layers = document["modelTopology"]["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer" and layers[0]["config"]["batch_input_shape"] == [None, 8, 8, 1]
    assert "module" not in json.dumps(document) and '"DTypePolicy"' not in json.dumps(document)
    template, x, y = digits_batch()
    spec = {**template.job_spec(2), "model": document}
    weights = (tmp_path / "tfjs" / "weights.bin").read_bytes()
    tfjs = check_in_tfjs(spec, weights, template.batch_file(x, y))
    assert tfjs == pytest.approx(keras_loss(cnn, x, y), abs=1e-4)


def test_the_keras_and_h5_files_of_one_model_give_the_same_tfjs_files(tmp_path):
    cnn = keras_cnn()
    for suffix in (".keras", ".h5"):
        cnn.save(tmp_path / f"cnn{suffix}")
        import_keras(tmp_path / f"cnn{suffix}", tmp_path / suffix)
    for name in ("model.json", "weights.bin"):
        assert (tmp_path / ".keras" / name).read_bytes() == (tmp_path / ".h5" / name).read_bytes()


def test_a_functional_embedding_lstm_model_loads_and_trains_in_tfjs(tmp_path):
    text_model = keras_text_model()
    text_model.save(tmp_path / "text.keras")
    document = json.loads(import_keras(tmp_path / "text.keras", tmp_path / "tfjs").read_text())
    assert document["modelTopology"]["class_name"] == "Model"
    embedding = next(l for l in document["modelTopology"]["config"]["layers"] if l["class_name"] == "Embedding")
    assert embedding["inbound_nodes"] == [[[document["modelTopology"]["config"]["input_layers"][0][0], 0, 0, {}]]]
    template = CharLSTM(units=(16,), seq_len=40, batch_size=8, embedding=8)
    x, y = template.batches(kjv_text("gen1:1-gen3:24"), 1)
    spec = {**template.job_spec(1), "model": document}
    tfjs = check_in_tfjs(spec, (tmp_path / "tfjs" / "weights.bin").read_bytes(), template.batch_file(x[0], y[0]))
    probabilities = np.asarray(text_model.predict(x[0].astype(np.int32), verbose=0), np.float64)
    assert tfjs == pytest.approx(float(-np.log(probabilities[np.arange(len(y[0])), y[0]]).mean()), abs=1e-4)


def keras_gru_model():
    """Functional: Embedding → Keras 3's default GRU (reset_after=True, sigmoid gates) → Dense."""
    k = keras()
    k.utils.set_random_seed(3)
    ids = k.Input((40,), dtype="int32")
    out = k.layers.Dense(VOCAB, activation="softmax")(k.layers.GRU(16)(k.layers.Embedding(VOCAB, 8)(ids)))
    return k.Model(ids, out)


def assert_tfjs_gradient_is_keras(model, document: dict, folder, template, x, y) -> None:
    """TF.js's loss and gradient of the imported files (in `folder`) on a batch: Keras 3's, to 1e-5."""
    spec = {**template.job_spec(1), "model": document}
    loss, grads = gradient_in_tfjs(spec, (folder / "weights.bin").read_bytes(), template.batch_file(x, y))
    want_loss, want = keras_gradient(model, x.astype(np.int32), y.astype(np.int32))
    assert loss == pytest.approx(want_loss, abs=1e-5)
    weights = document["weightsManifest"][0]["weights"]
    assert [w["name"] for w in weights] == list(want)
    for w, got in zip(weights, grads):
        np.testing.assert_allclose(np.asarray(got).reshape(w["shape"]), want[w["name"]], atol=1e-5, err_msg=w["name"])


def keras_gradient(model, x, y) -> tuple[float, dict[str, np.ndarray]]:
    """Keras 3's (jax's) mean cross-entropy of a batch and its gradient, by weight name."""
    import jax
    import jax.numpy as jnp

    frozen = [v.value for v in model.non_trainable_variables]

    def loss(trainable):
        probabilities, _ = model.stateless_call(trainable, frozen, x)
        return -jnp.mean(jnp.log(jnp.take_along_axis(probabilities, y[..., None], axis=-1)))

    value, grads = jax.value_and_grad(loss)([v.value for v in model.trainable_variables])
    by_variable = {id(v): np.asarray(g) for v, g in zip(model.trainable_variables, grads)}
    return float(value), {
        name: by_variable[id(v)] for l in model.layers for name, v in zip(weight_names(l), l.weights) if v.trainable
    }


def test_keras3s_default_gru_trains_in_tfjs_with_keras_loss_and_gradient(tmp_path):
    """TF.js 4.22's GRUCell refuses reset_after=True; the page's own (frontend/src/layers.js,
    registered as GRU) gives Keras's loss and gradient to 1e-5 on a batch of the char template."""
    model = keras_gru_model()
    assert model.layers[2].get_config()["reset_after"] is True
    model.save(tmp_path / "gru.keras")
    document = json.loads(import_keras(tmp_path / "gru.keras", tmp_path / "tfjs").read_text())
    weights = document["weightsManifest"][0]["weights"]
    assert [w["shape"] for w in weights if w["name"].endswith("/bias")][0] == [2, 48]  # input and recurrent rows
    template = CharLSTM(units=(16,), seq_len=40, batch_size=8, embedding=8)
    x, y = template.batches(kjv_text("gen1:1-gen3:24"), 1)
    assert_tfjs_gradient_is_keras(model, document, tmp_path / "tfjs", template, x[0], y[0])


def test_batchnormalization_trains_in_tfjs_as_keras_and_its_statistics_travel(tmp_path):
    """A training pass in TF.js gives Keras 3's gradient (training mode: the batch's own
    statistics) to 1e-5, and for the moving mean and variance the change Keras's layer
    makes to them on that batch (before minus after), which the fold applies."""
    import jax
    import jax.numpy as jnp

    model = keras_cnn(normalized=True)
    k = keras()
    norm = model.get_layer("norm")
    norm.moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype(np.float32))  # not the initial 0 and 1
    norm.moving_variance.assign(np.linspace(0.5, 2, 8).astype(np.float32))
    model.save(tmp_path / "bn.keras")
    document = json.loads(import_keras(tmp_path / "bn.keras", tmp_path / "tfjs").read_text())
    names = [w["name"] for w in document["weightsManifest"][0]["weights"]]
    template, x, y = digits_batch()
    spec = {**template.job_spec(2), "model": document}
    loss, grads = gradient_in_tfjs(spec, (tmp_path / "tfjs" / "weights.bin").read_bytes(), template.batch_file(x, y))

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def cost(values):
        probabilities, moved = model.stateless_call(values, frozen, x, training=True)
        return -jnp.mean(jnp.log(probabilities[jnp.arange(len(y)), y.reshape(-1)])), moved

    (want_loss, moved), want = jax.value_and_grad(cost, has_aux=True)(trainable)
    expected = {f"{l.name}/{v.name}": None for l in model.layers for v in l.weights}
    by_id = {id(v): np.asarray(g) for v, g in zip(model.trainable_variables, want)}
    by_id.update({id(v): np.asarray(v.value) - np.asarray(m) for v, m in zip(model.non_trainable_variables, moved)})
    for layer in model.layers:
        for v in layer.weights:
            expected[f"{layer.name}/{v.name}"] = by_id[id(v)]
    assert loss == pytest.approx(float(want_loss), abs=1e-5)
    assert names == list(expected) and {"norm/moving_mean", "norm/moving_variance"} <= set(names)
    for name, got in zip(names, grads):
        np.testing.assert_allclose(
            np.asarray(got).reshape(expected[name].shape), expected[name], atol=1e-5, err_msg=name
        )
    assert np.abs(expected["norm/moving_variance"]).max() > 1e-3  # the statistics did move
    assert k.ops.convert_to_numpy(norm.moving_mean)[0] == pytest.approx(-0.5)  # Keras's own model left as it was


def keras_attention_model(blocks: int = 2, width: int = 16, seq_len: int = 40):
    """A small causal transformer over the char template's ids: Embedding, a causal Conv1D
    (TF.js has no causal padding; the page's Conv1D does), then per block
    x + MultiHeadAttention(LN(x)) and x + Dense(Dense(LN(x))), then LN -> Dense softmax."""
    k = keras()
    k.utils.set_random_seed(5)
    ids = k.Input((seq_len,), dtype="int32")
    x = k.layers.Conv1D(width, 4, padding="causal", name="steps")(k.layers.Embedding(VOCAB, width)(ids))
    for b in range(blocks):
        h = k.layers.LayerNormalization(name=f"ln{b}a")(x)
        h = k.layers.MultiHeadAttention(num_heads=2, key_dim=width // 2, name=f"mha{b}")(h, h, use_causal_mask=True)
        x = k.layers.Add()([x, h])
        h = k.layers.Dense(2 * width, activation="relu")(k.layers.LayerNormalization(name=f"ln{b}b")(x))
        x = k.layers.Add()([x, k.layers.Dense(width)(h)])
    out = k.layers.Dense(VOCAB, activation="softmax")(k.layers.LayerNormalization()(x))
    return k.Model(ids, out)


def test_keras3s_attention_trains_in_tfjs_with_keras_loss_and_gradient_and_exports_back(tmp_path):
    """MultiHeadAttention with a causal mask (the page's own layer, frontend/src/layers.js) and
    LayerNormalization: TF.js gives Keras 3's loss and every weight's gradient to 1e-5; the
    weights keep Keras's names; the export is the same model to Keras (predictions to 1e-5)."""
    model = keras_attention_model()
    model.save(tmp_path / "attention.keras")
    document = json.loads(import_keras(tmp_path / "attention.keras", tmp_path / "tfjs").read_text())
    weights = document["weightsManifest"][0]["weights"]
    assert [w["name"] for w in weights[5:13]] == [
        f"mha0/{part}/{kind}" for part in ("query", "key", "value", "attention_output") for kind in ("kernel", "bias")
    ]
    attention = [
        layer for layer in document["modelTopology"]["config"]["layers"] if layer["class_name"] == "MultiHeadAttention"
    ]
    assert [layer["config"]["use_causal_mask"] for layer in attention] == [True, True]
    template = CharTransformer(seq_len=40, batch_size=8)
    x, y = template.batches(kjv_text("gen1:1-gen3:24"), 1)
    assert y.shape == (1, 8, 40)  # the next character at every position
    assert_tfjs_gradient_is_keras(model, document, tmp_path / "tfjs", template, x[0], y[0])
    export_keras(tmp_path / "tfjs" / "model.json", tmp_path / "back.keras")
    back = keras().models.load_model(tmp_path / "back.keras")
    np.testing.assert_allclose(back.predict(x[0], verbose=0), model.predict(x[0], verbose=0), atol=1e-5)


def test_tfjs_files_export_to_a_keras3_file_with_the_same_weights_and_predictions(tmp_path):
    """The digits template's own TF.js files (no InputLayer: the first layer's batch_input_shape)."""
    template, x, y = digits_batch()
    specs = [WeightSpec(w["name"], tuple(w["shape"])) for w in template.weight_specs()]
    values = template.initial_weights(3)
    (tmp_path / "model.json").write_bytes(model_json(template.topology(), specs))
    (tmp_path / "weights.bin").write_bytes(encode_tensors(specs, values))
    for suffix in (".keras", ".h5"):
        out = export_keras(tmp_path / "model.json", tmp_path / f"digits{suffix}")
        model = keras().models.load_model(out)
        assert [(f"{l.name}/{v.name}") for l in model.layers for v in l.weights] == [s.name for s in specs]
        for got, want in zip(model.get_weights(), values):
            np.testing.assert_array_equal(got, want)
        tfjs = check_in_tfjs(template.job_spec(2), (tmp_path / "weights.bin").read_bytes(), template.batch_file(x, y))
        assert keras_loss(model, x, y) == pytest.approx(tfjs, abs=1e-4)


def test_round_trip_keras_to_tfjs_to_keras_keeps_every_weight(tmp_path):
    cnn = keras_cnn(seed=7)
    cnn.save(tmp_path / "cnn.keras")
    model_path = import_keras(tmp_path / "cnn.keras", tmp_path / "tfjs")
    back = keras().models.load_model(export_keras(model_path, tmp_path / "back.keras"))
    for got, want in zip(back.get_weights(), cnn.get_weights()):
        np.testing.assert_array_equal(got, want)
    document = json.loads(model_path.read_text())
    specs = [WeightSpec(w["name"], tuple(w["shape"])) for w in document["weightsManifest"][0]["weights"]]
    assert [s.name for s in specs] == [f"{l.name}/{v.name}" for l in cnn.layers for v in l.weights]
    assert len(decode_tensors(specs, (tmp_path / "tfjs" / "weights.bin").read_bytes())) == 4


def test_wrong_files_are_clear_errors(tmp_path):
    with pytest.raises(KerasFileError, match=r"\.keras or \.h5"):
        import_keras(tmp_path / "model.pb", tmp_path / "out")
    with pytest.raises(KerasFileError, match=r"\.keras"):
        export_keras(tmp_path / "model.json", tmp_path / "out.pt")
    cli = [sys.executable, "-m", "crowdtrain.cli"]
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    proc = subprocess.run(
        [*cli, "import-keras", str(tmp_path / "junk.keras"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert proc.returncode != 0 and "cannot import" in proc.stderr and "Traceback" not in proc.stderr


def test_import_keras_lists_each_thing_the_page_cannot_train_and_writes_nothing(tmp_path):
    """A layer type the page has not (UnitNormalization), Keras 3's default GRU with dropout (the
    page's reset_after GRU has none), attention with dropout (nor has the page's) and a frozen
    layer (the fold would move its weights; a BatchNormalization's moving statistics are not
    listed): one line each, and no folder written."""
    k = keras()
    inputs = k.Input(shape=(6, 4))
    x = k.layers.MultiHeadAttention(2, 2, dropout=0.1, name="mha")(inputs, inputs)
    x = k.layers.GRU(5, dropout=0.1, name="gru")(x)
    x = k.layers.UnitNormalization(name="unit")(k.layers.BatchNormalization(name="norm")(x))
    frozen = k.layers.Dense(4, name="frozen")
    frozen.trainable = False
    model = k.Model(inputs, k.layers.Dense(3, activation="softmax", name="out")(frozen(x)))
    source = tmp_path / "untrainable.keras"
    model.save(source)
    out = tmp_path / "tfjs"
    with pytest.raises(KerasFileError) as refused:
        import_keras(source, out)
    lines = str(refused.value).splitlines()
    assert any("'UnitNormalization'" in line and "'unit'" in line for line in lines), lines
    assert any("reset_after" in line and "'gru'" in line and "dropout" in line for line in lines), lines
    assert any("frozen/kernel" in line for line in lines) and "norm" not in str(lines), lines
    assert any("'mha'" in line and "dropout=0.1" in line for line in lines), lines
    assert len(lines) == 4, lines
    assert not out.exists()
    proc = subprocess.run(
        [sys.executable, "-m", "crowdtrain.cli", "import-keras", str(source), str(out)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1 + len(lines)


def test_attention_called_with_what_the_pages_layer_has_not_is_refused(tmp_path):
    """The page's MultiHeadAttention takes query, value (and key) as arguments and use_causal_mask:
    a mask tensor, attention scores or tensors passed by keyword would be dropped, so they are refused."""
    k = keras()
    inputs = k.Input(shape=(6, 4))
    attended = k.layers.MultiHeadAttention(2, 2, name="mha")(query=inputs, value=inputs)
    k.Model(inputs, attended).save(tmp_path / "keywords.keras")
    with pytest.raises(KerasFileError, match="'mha'.*takes query and value"):
        import_keras(tmp_path / "keywords.keras", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_keras_is_named_so(tmp_path):
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a model")
    with pytest.raises(KerasFileError, match="is not a Keras file"):
        import_keras(bogus, tmp_path / "out")
    h5 = tmp_path / "bogus.h5"
    h5.write_bytes(b"PK\x03\x04 a zip, not HDF5")
    with pytest.raises(KerasFileError, match="is not a Keras file"):
        import_keras(h5, tmp_path / "out")
    assert not (tmp_path / "out").exists()
