"""Inputs a user really feeds: odd batch sizes, several inputs, softmax outputs, float16."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLIDMUModel, backbones, clid_loss
from clidmu_tf.callbacks import CLIDSnapshotEnsemble, load_snapshot_ensemble


def tiny_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n).astype("int32")


class BatchLogs(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({name: float(value) for name, value in logs.items()})


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_batches_under_two_samples_leave_every_clid_average(mode):
    # 21 samples in batches of 10: the third training, meta and validation batch holds one.
    x, y = tiny_data(21)
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(backbones.mlp((6,), 3, hidden_units=(8,)), seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        run_eagerly=mode == "eager",
        jit_compile=mode == "xla",
    )
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    meta = tf.data.Dataset.from_tensor_slices(x).batch(10).repeat()
    batches = BatchLogs()
    history = model.fit(
        tf.data.Dataset.zip((train, meta)),
        epochs=1,
        verbose=0,
        validation_data=(x, y),
        validation_batch_size=10,
        callbacks=[batches],
    )
    two_full, with_single = batches.logs[1], batches.logs[2]
    # The one-sample training batch adds nothing to `clid`, the skipped meta step nothing
    # to `meta_loss`; the step is counted as skipped and the meta optimiser did not move.
    assert with_single["clid"] == pytest.approx(two_full["clid"], rel=1e-6)
    assert with_single["meta_loss"] == pytest.approx(two_full["meta_loss"], rel=1e-6)
    assert history.history["skipped_meta_updates"] == [1.0]
    assert int(model.meta_optimizer.iterations.numpy()) == 2
    assert all(np.isfinite(values[-1]) for values in history.history.values())

    outputs = model.backbone.predict(x, verbose=0)
    full_batches = (slice(0, 10), slice(10, 20))
    expected = np.mean(
        [float(clid_loss(outputs["features"][s], outputs["logits"][s])) for s in full_batches]
    )
    assert history.history["val_clid"][-1] == pytest.approx(expected, rel=1e-4)
    evaluated = model.evaluate(x, y, batch_size=10, verbose=0, return_dict=True)
    assert evaluated["clid"] == pytest.approx(expected, rel=1e-4)


def two_input_model(kind):
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(
        keras.layers.Concatenate()([a, b])
    )
    logits = keras.layers.Dense(3, name="logits")(hidden)
    inputs = {"a": a, "b": b} if kind == "dict" else (a, b)
    return keras.Model(inputs, logits)


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_multi_input_backbones_train_weigh_and_ensemble(kind, tmp_path):
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(size=(20, 4)).astype("float32"), rng.normal(size=(20, 3)).astype("float32")
    y = (np.arange(20) % 3).astype("int32")
    x = {"a": xa, "b": xb} if kind == "dict" else (xa, xb)
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(two_input_model(kind), feature_layer="hidden", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    meta = tf.data.Dataset.from_tensor_slices(x).batch(10).repeat()
    snapshots = CLIDSnapshotEnsemble(x, top_k=2, directory=tmp_path, batch_size=10)
    history = model.fit(
        tf.data.Dataset.zip((train, meta)),
        epochs=2,
        verbose=0,
        validation_data=(x, y),
        callbacks=[snapshots],
    )
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    weights = model.per_sample_weights(x, y, batch_size=8)
    assert weights.shape == (20,) and np.all((weights > 0) & (weights < 1))
    ensemble = load_snapshot_ensemble(tmp_path)
    assert ensemble.predict(x, verbose=0).shape == (20, 3)
    assert len(snapshots.snapshots) == 2
    bad = dict(x) if kind == "dict" else list(x)
    bad["a" if kind == "dict" else 0] = np.where(xa > 1.5, np.nan, xa)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.per_sample_weights(bad if kind == "dict" else tuple(bad), y)


def test_softmax_last_layer_trains_on_its_pre_softmax_logits(tmp_path):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    probabilities = keras.layers.Dense(3, activation="softmax", name="out")(hidden)
    user_model = keras.Model(inputs, probabilities)
    with pytest.warns(UserWarning, match="'out' has activation='softmax'; its pre-activation"):
        model = CLIDMUModel(user_model, feature_layer="hidden", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = tiny_data(20)
    before = user_model.get_layer("out").kernel.numpy().copy()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    meta = tf.data.Dataset.from_tensor_slices(x).batch(10).repeat()
    model.fit(tf.data.Dataset.zip((train, meta)), epochs=1, verbose=0)
    # The user's own layer was trained, and the model's outputs are its logits.
    assert not np.allclose(before, user_model.get_layer("out").kernel.numpy())
    probabilities = keras.ops.softmax(model.predict(x, verbose=0)).numpy()
    np.testing.assert_allclose(probabilities, user_model.predict(x, verbose=0), atol=1e-5)
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def vri_model(log_variance_bias, seed=0):
    keras.utils.set_random_seed(seed)
    model = CLIDMUModel(backbones.mlp((6,), 3, hidden_units=(8,)), meta_model="vri", seed=seed)
    head = model.meta_model.log_variance_head
    head.bias.assign(np.full(head.bias.shape, log_variance_bias, "float32"))
    return model


def vri_stream(n=40):
    x, y = tiny_data(n, seed=2)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    meta = tf.data.Dataset.from_tensor_slices(x).batch(10).repeat()
    return tf.data.Dataset.zip((train, meta))


def test_vri_rectifier_computes_in_float32_under_mixed_precision():
    # A log-variance of 24 makes exp(s / 2) = 1.6e5: past float16's 65504, fine in float32.
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = vri_model(log_variance_bias=24.0)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        history = model.fit(vri_stream(), epochs=3, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.backbone.compute_dtype == "float16"
    assert model.meta_model.compute_dtype == "float32"
    assert all(np.all(np.isfinite(w)) for w in model.meta_model.get_weights())
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    assert history.history["skipped_meta_updates"] == [0.0, 0.0, 0.0]


def test_non_finite_meta_gradient_is_skipped_and_counted():
    # exp(200 / 2) overflows even float32: every meta-gradient is NaN.
    model = vri_model(log_variance_bias=200.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    meta_before = [w.copy() for w in model.meta_model.get_weights()]
    history = model.fit(vri_stream(), epochs=3, verbose=0)
    assert history.history["skipped_meta_updates"] == [4.0, 4.0, 4.0]
    assert int(model.meta_optimizer.iterations.numpy()) == 0
    for before, after in zip(meta_before, model.meta_model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert all(np.all(np.isfinite(w)) for w in model.backbone.get_weights())
    assert np.isfinite(history.history["loss"][-1])
