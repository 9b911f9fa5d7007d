import threading
import time
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLIDMUModel, MetaWeightNet, backbones
from tests.test_clid_loss import numpy_clid_with_fixed_row_sums, output_row_sums


def tiny_data(n=40, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, n).astype("int32")
    return x, y


def clid_stream(x, y, batch=10):
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    meta = tf.data.Dataset.from_tensor_slices(x).batch(batch).repeat()
    return tf.data.Dataset.zip((train, meta))


def tiny_model(meta_model="wnet", seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return CLIDMUModel(backbones.mlp((6,), 3, hidden_units=(8,)), meta_model=meta_model, seed=seed, **kwargs)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("meta_model", ["wnet", "vri"])
def test_fit_runs_in_every_execution_mode(mode, meta_model):
    x, y = tiny_data()
    model = tiny_model(meta_model)
    model.meta_model  # noqa: B018 - the attribute is part of the contract
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        run_eagerly=mode == "eager",
        jit_compile=mode == "xla",
    )
    before = [v.numpy().copy() for v in model.meta_model.trainable_variables]
    history = model.fit(clid_stream(x, y), epochs=2, verbose=0, validation_data=(x, y))
    logs = history.history
    assert {"loss", "accuracy", "meta_loss", "clid", "val_loss", "val_accuracy", "val_clid"} <= set(logs)
    assert "val_meta_loss" not in logs
    assert all(np.isfinite(v[-1]) for v in logs.values())
    after = [v.numpy() for v in model.meta_model.trainable_variables]
    assert any(not np.allclose(b, a) for b, a in zip(before, after)), "meta-model never moved"
    assert model.predict(x, verbose=0).shape == (40, 3)


def normalized_weights_reference(weights, labels, normalization):
    """The weights' normalisation written out class by class (the model's is vectorised)."""
    if normalization == "batch":
        return weights / tf.reduce_sum(weights)
    parts = []
    for index, label in enumerate(labels):
        members = labels == label
        class_total = tf.reduce_sum(tf.boolean_mask(weights, members))
        parts.append(weights[index] / class_total * (members.sum() / len(labels)))
    return tf.stack(parts)


@pytest.mark.parametrize(
    "virtual_step, weight_normalization", [("full", "batch"), ("head", "batch"), ("full", "class")]
)
def test_meta_gradient_agrees_with_finite_difference_through_the_virtual_step(
    virtual_step, weight_normalization
):
    x, y = tiny_data(n=12, seed=3)
    x_meta, _ = tiny_data(n=8, seed=4)
    model = tiny_model(
        seed=1, virtual_step=virtual_step, weight_normalization=weight_normalization
    )
    # The full step moves every backbone weight; the head step only the logits layer's.
    stepped = (
        model.backbone.trainable_variables
        if virtual_step == "full"
        else model.backbone.get_layer("logits").trainable_variables
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.build_optimizers()
    labels = tf.constant(y)

    with tf.GradientTape(persistent=True) as tape:
        outputs = model.backbone(x, training=True)
    _, analytic = model.meta_gradients(tape, outputs, labels, x_meta)
    assert all(g is not None for g in analytic)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in analytic) > 0

    def fast_outputs_after_virtual_step():
        """First-order re-computation: the virtual SGD step, then the fast model's outputs."""
        weights_before = [v.numpy() for v in stepped]
        with tf.GradientTape() as inner:
            logits = model.backbone(x, training=True)["logits"]
            per_sample = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            weights = model.meta_model(tf.stop_gradient(per_sample)[:, None])[:, 0]
            weights = normalized_weights_reference(weights, y, weight_normalization)
            loss = tf.reduce_sum(weights * per_sample)
        grads = inner.gradient(loss, stepped)
        for variable, grad in zip(stepped, grads):
            variable.assign_sub(0.5 * grad)
        fast = model.backbone(x_meta, training=True)
        for variable, weight in zip(stepped, weights_before):
            variable.assign(weight)
        return fast["features"].numpy().astype("float64"), fast["logits"].numpy().astype("float64")

    # CLID's gradient treats the feature side and the output row sums as constants, so the
    # finite difference holds them at their values for the unperturbed meta-model.
    base_features, base_logits = fast_outputs_after_virtual_step()
    row_sums = output_row_sums(base_logits)

    rng = np.random.default_rng(0)
    meta_variables = model.meta_model.trainable_variables
    direction = [rng.normal(size=v.shape).astype("float32") for v in meta_variables]
    originals = [v.numpy() for v in meta_variables]
    step = 1e-3

    def shifted(sign):
        for variable, original, d in zip(meta_variables, originals, direction):
            variable.assign(original + sign * step * d)
        _, logits = fast_outputs_after_virtual_step()
        return numpy_clid_with_fixed_row_sums(base_features, logits, 0.5, row_sums)

    numeric = (shifted(+1) - shifted(-1)) / (2 * step)
    for variable, original in zip(meta_variables, originals):
        variable.assign(original)
    analytic_directional = sum(float(tf.reduce_sum(g * d)) for g, d in zip(analytic, direction))
    assert analytic_directional == pytest.approx(numeric, rel=0.05, abs=1e-6)


def test_virtual_step_leaves_batch_norm_statistics_to_the_real_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 8).astype("int32")
    x_meta = (5.0 + 3.0 * rng.normal(size=(8, 6, 6, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(backbones.small_cnn((6, 6, 1), 3, widths=(4,)), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    reference = keras.models.clone_model(model.backbone)
    reference.set_weights(model.backbone.get_weights())
    reference(x, training=True)  # exactly one moving-statistics update, from x alone

    stream = tf.data.Dataset.zip(
        (tf.data.Dataset.from_tensors((x, y)), tf.data.Dataset.from_tensors(x_meta).repeat())
    )
    model.fit(stream, epochs=1, verbose=0)
    for got, expected in zip(model.backbone.non_trainable_variables, reference.non_trainable_variables):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "virtual_step, weight_normalization", [("full", "batch"), ("head", "batch"), ("full", "class")]
)
def test_without_meta_updates_it_equals_plain_weighted_training(virtual_step, weight_normalization):
    x, y = tiny_data(n=10)
    model = tiny_model(virtual_step=virtual_step, weight_normalization=weight_normalization)
    model.compile(optimizer=keras.optimizers.SGD(0.1), meta_optimizer=keras.optimizers.SGD(0.0))
    reference = keras.models.clone_model(model.backbone)
    reference.set_weights(model.backbone.get_weights())
    meta_before = [v.numpy().copy() for v in model.meta_model.trainable_variables]

    with tf.GradientTape() as tape:
        logits = reference(x, training=True)["logits"]
        per_sample = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        weights = model.meta_model(tf.stop_gradient(per_sample)[:, None])[:, 0]
        weights = normalized_weights_reference(weights, y, weight_normalization)
        loss = tf.reduce_sum(weights * per_sample)
    grads = tape.gradient(loss, reference.trainable_variables)
    for variable, grad in zip(reference.trainable_variables, grads):
        variable.assign_sub(0.1 * grad)

    model.fit(clid_stream(x, y, batch=10), epochs=1, verbose=0)
    for got, expected in zip(model.backbone.trainable_variables, reference.trainable_variables):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    for got, expected in zip(model.meta_model.trainable_variables, meta_before):
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla", "steps_per_execution"])
def test_meta_every_skips_meta_updates_between_meta_steps(mode):
    x, y = tiny_data(n=30)
    model = tiny_model(meta_every=2)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        meta_optimizer=keras.optimizers.SGD(0.01),
        run_eagerly=mode == "eager",
        jit_compile=mode == "xla",
        steps_per_execution=3 if mode == "steps_per_execution" else 1,
    )
    model.fit(clid_stream(x, y, batch=10), epochs=1, verbose=0)
    # Steps 0, 1, 2: meta updates at steps 0 and 2.
    assert int(model.meta_optimizer.iterations.numpy()) == 2
    assert int(model.optimizer.iterations.numpy()) == 3
    # The schedule goes on from the optimiser's step count in the next fit: steps 3, 4, 5.
    history = model.fit(clid_stream(x, y, batch=10), epochs=1, verbose=0)
    assert int(model.meta_optimizer.iterations.numpy()) == 3
    assert np.isfinite(history.history["meta_loss"][-1])


def test_meta_every_under_a_mirrored_strategy(two_cpu_strategy):
    x, y = tiny_data(n=60)
    strategy = two_cpu_strategy
    with strategy.scope():
        model = tiny_model(meta_every=2)
        model.compile(optimizer=keras.optimizers.SGD(0.1), meta_optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy().copy() for v in model.meta_model.trainable_variables]
    history = model.fit(clid_stream(x, y, batch=20), epochs=1, verbose=0)
    # Steps 0, 1, 2: meta updates at steps 0 and 2, and the meta-model moved.
    assert int(model.meta_optimizer.iterations.numpy()) == 2
    assert int(model.optimizer.iterations.numpy()) == 3
    assert np.isfinite(history.history["meta_loss"][-1])
    after = [v.numpy() for v in model.meta_model.trainable_variables]
    assert any(not np.allclose(b, a) for b, a in zip(before, after))
    # Replicas stay in sync: every replica's copy of the meta-model holds the same values.
    for variable in model.meta_model.trainable_variables:
        copies = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
        np.testing.assert_array_equal(copies[0], copies[1])

    # Several steps per call fail inside TensorFlow with several replicas, whatever
    # meta_every: refused before any step.
    for meta_every in (1, 2):
        with strategy.scope():
            several = tiny_model(meta_every=meta_every)
            several.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=2)
        weights = [w.copy() for w in several.backbone.get_weights()]
        match = f"meta_every={meta_every}, 2 replicas, steps_per_execution=2"
        with pytest.raises(ValueError, match=match):
            several.fit(clid_stream(x, y, batch=20), epochs=1, verbose=0)
        assert int(several.optimizer.iterations.numpy()) == 0
        for before_fit, after_fit in zip(weights, several.backbone.get_weights()):
            np.testing.assert_array_equal(before_fit, after_fit)



@pytest.mark.parametrize("meta_model", ["wnet", "vri"])
def test_meta_every_with_several_steps_per_execution_under_a_one_replica_strategy(meta_model):
    # With steps_per_execution > 1 the schedule is decided in the graph; the meta
    # optimiser's update synchronises replicas (even one), so it cannot sit in that
    # conditional: fit failed while tracing ("merge_call called while defining a new
    # graph"), as `--distribute mirrored` on one GPU would. Two replicas are refused (see
    # test_meta_every_under_a_mirrored_strategy).
    x, y = tiny_data(n=60)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = tiny_model(meta_model, meta_every=2)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            meta_optimizer=keras.optimizers.SGD(0.1),
            steps_per_execution=2,
        )
    before = [v.numpy().copy() for v in model.meta_model.trainable_variables]
    history = model.fit(clid_stream(x, y, batch=20), epochs=1, verbose=0)
    # Steps 0, 1, 2: meta updates at steps 0 and 2, none counted as skipped.
    assert int(model.meta_optimizer.iterations.numpy()) == 2
    assert int(model.optimizer.iterations.numpy()) == 3
    assert history.history["skipped_meta_updates"][-1] == 0
    assert np.isfinite(history.history["meta_loss"][-1])
    after = [v.numpy() for v in model.meta_model.trainable_variables]
    assert any(not np.allclose(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize("meta_model", ["wnet", "vri"])
def test_head_virtual_step_trains_the_meta_model(meta_model):
    x, y = tiny_data()
    model = tiny_model(meta_model, virtual_step="head")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [v.numpy().copy() for v in model.meta_model.trainable_variables]
    history = model.fit(clid_stream(x, y), epochs=2, verbose=0)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    after = [v.numpy() for v in model.meta_model.trainable_variables]
    assert any(not np.allclose(b, a) for b, a in zip(before, after)), "meta-model never moved"


def test_class_normalization_gives_each_class_its_share_of_the_batch():
    # Weights as from a meta-model that all but drops the samples of class 0.
    model = tiny_model(weight_normalization="class")
    labels = tf.constant([0, 0, 1, 2, 2, 2], "int32")
    weights = tf.constant([1e-6, 3e-6, 1.0, 1.0, 2.0, 1.0])
    normalized = model._normalized_weights(weights, labels).numpy()
    # Class 0 keeps 2/6 of the batch, split 1:3 as the meta-model said; class 2 splits 3/6 as 1:2:1.
    np.testing.assert_allclose(normalized, [1 / 12, 3 / 12, 1 / 6, 1 / 8, 1 / 4, 1 / 8], rtol=1e-5)
    batch = tiny_model(weight_normalization="batch")._normalized_weights(weights, labels).numpy()
    assert batch[:2].sum() < 1e-5, "the authors' normalisation lets a class be dropped"
    # Labels of shape [B, 1] and all-zero weights of a class (left at 0, as the authors do).
    zeros = tf.constant([0.0, 0.0, 1.0, 1.0, 2.0, 1.0])
    normalized = model._normalized_weights(zeros, labels[:, None]).numpy()
    np.testing.assert_allclose(normalized, [0, 0, 1 / 6, 1 / 8, 1 / 4, 1 / 8], rtol=1e-5)


def test_weight_normalization_is_saved_and_checked(tmp_path):
    x, y = tiny_data()
    model = tiny_model(weight_normalization="class")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(clid_stream(x, y), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    assert keras.models.load_model(tmp_path / "model.keras").weight_normalization == "class"
    with pytest.raises(ValueError, match=r"weight_normalization.*Received: weight_normalization='sample'"):
        tiny_model(weight_normalization="sample")
    with pytest.raises(ValueError, match=r"weight_normalization='class'.*vri"):
        tiny_model(meta_model="vri", weight_normalization="class")


def test_head_virtual_step_finds_the_logits_layer_of_a_wrapped_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    model = CLIDMUModel(
        keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden)),
        feature_layer="hidden",
        virtual_step="head",
    )
    from clidmu_tf.backbones.logits_layer import logits_layer

    assert logits_layer(model.backbone).name == "out"
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = tiny_data()
    assert np.isfinite(model.fit(clid_stream(x, y), epochs=1, verbose=0).history["meta_loss"][-1])


def _layers_after_features(kind):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    if kind == "activation":
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    if kind == "layer in between":
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dropout(0.5)(hidden)))
    if kind == "not dense":
        return keras.Model(inputs, keras.layers.Lambda(lambda t: t[:, :3])(hidden))
    head = keras.layers.Dense(3)
    head.trainable = False
    return keras.Model(inputs, head(hidden))


@pytest.mark.parametrize(
    "kind, match",
    [
        ("layer in between", "applied straight"),
        ("not dense", "Lambda"),
        ("frozen", "frozen"),
    ],
)
def test_head_virtual_step_needs_an_affine_logits_layer(kind, match):
    with pytest.raises(ValueError, match=match):
        CLIDMUModel(_layers_after_features(kind), feature_layer="hidden", virtual_step="head")
    CLIDMUModel(_layers_after_features(kind), feature_layer="hidden")  # the full step takes it


def test_head_virtual_step_reads_a_softmax_dense_before_its_activation():
    # from_model unwraps the softmax (DenseLogits); the head step updates that Dense.
    with pytest.warns(UserWarning):
        model = CLIDMUModel(
            _layers_after_features("activation"), feature_layer="hidden", virtual_step="head"
        )
    x, y = tiny_data(n=20)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(clid_stream(x, y), epochs=1, verbose=0)
    assert np.all(np.isfinite(model.predict(x, verbose=0)))


def test_flipped_labels_end_with_lower_weights_on_a_small_noisy_set():
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = 600
    x = (digits.images[:n] / 16.0).reshape(n, 64).astype("float32")
    clean = digits.target[:n].astype("int32")
    rng = np.random.default_rng(0)
    flipped = rng.random(n) < 0.4
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + rng.integers(1, 10, flipped.sum())) % 10

    keras.utils.set_random_seed(0)
    model = CLIDMUModel(backbones.mlp((64,), 10, hidden_units=(64,)), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))  # default meta optimiser
    train = tf.data.Dataset.from_tensor_slices((x, noisy)).shuffle(n, seed=0).batch(50)
    meta = tf.data.Dataset.from_tensor_slices(x[:300]).batch(50).repeat()
    model.fit(tf.data.Dataset.zip((train, meta)), epochs=30, verbose=0)
    weights = model.per_sample_weights(x, noisy)
    assert weights.shape == (n,)
    assert weights[flipped].mean() < 0.8 * weights[~flipped].mean()


@pytest.mark.parametrize("objective", ["ce_clean", "ce_noisy", "mae_noisy"])
def test_labelled_meta_objectives_read_meta_labels(objective):
    x, y = tiny_data()
    model = tiny_model(meta_objective=objective)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    meta = tf.data.Dataset.from_tensor_slices((x, y)).batch(10).repeat()
    history = model.fit(tf.data.Dataset.zip((train, meta)), epochs=1, verbose=0)
    assert np.isfinite(history.history["meta_loss"][-1])


def test_plain_objective_trains_on_arrays():
    x, y = tiny_data()
    model = tiny_model(meta_objective="none")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(x, y, batch_size=10, epochs=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_mirrored_strategy_scales_losses_per_replica(two_cpu_strategy):
    """With two replicas a plain step equals the single-device step on the global batch."""
    x, y = tiny_data(n=20)
    strategy = two_cpu_strategy
    with strategy.scope():
        distributed = tiny_model(meta_objective="none")
        distributed.compile(optimizer=keras.optimizers.SGD(0.5))
    single = tiny_model(meta_objective="none")
    single.compile(optimizer=keras.optimizers.SGD(0.5))
    single.backbone.set_weights(distributed.backbone.get_weights())
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    distributed.fit(data, epochs=1, verbose=0)
    single.fit(data, epochs=1, verbose=0)
    for got, expected in zip(distributed.backbone.get_weights(), single.backbone.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    with strategy.scope():
        meta_model = tiny_model()
        meta_model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = meta_model.fit(clid_stream(x, y, batch=20), epochs=1, verbose=0)
    assert np.isfinite(history.history["meta_loss"][-1])
    assert int(meta_model.meta_optimizer.iterations.numpy()) == 1


def test_a_dataset_passed_again_is_not_checked_again(monkeypatch):
    # Checking reads the first batch, which refills a shuffle buffer: `fit(epochs=1)` in a
    # loop on the same dataset checks it once. A dataset that failed the check is checked
    # (and refused) again, and a new dataset is checked.
    x, y = tiny_data()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    reads = []
    first_element = CLIDMUModel._first_element
    monkeypatch.setattr(
        CLIDMUModel,
        "_first_element",
        staticmethod(lambda dataset, name: reads.append(name) or first_element(dataset, name)),
    )
    data, validation = clid_stream(x, y), tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    for _ in range(3):
        model.fit(data, validation_data=validation, epochs=1, verbose=0)
    assert reads == ["x", "validation_data"]
    bad = clid_stream(x, np.where(y == 0, 3, y).astype("int32"))
    for _ in range(2):
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            model.fit(bad, epochs=1, verbose=0)
    model.fit(clid_stream(x, y), epochs=1, verbose=0)
    assert reads == ["x", "validation_data", "x", "x", "x"]


def test_a_meta_batch_that_cannot_split_over_the_replicas_is_refused(two_cpu_strategy):
    # A share of 1 sample skips the meta step on that replica alone; under multi-worker
    # training the other workers then waited for it for ever. The check is the model's, so
    # `model.fit` refuses it as the command line does, before any step.
    x, y = tiny_data(n=20)
    with two_cpu_strategy.scope():
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    weights = [w.copy() for w in model.backbone.get_weights()]
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    for size in (3, 2):
        meta = tf.data.Dataset.from_tensor_slices(x).batch(size).repeat()
        with pytest.raises(ValueError, match=rf"multiple of 2 of at least 4.*size.*={size}"):
            model.fit(tf.data.Dataset.zip((train, meta)), epochs=1, verbose=0)
    for before, after in zip(weights, model.backbone.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_keras_file_round_trip_restores_both_optimisers(tmp_path):
    x, y = tiny_data()
    model = tiny_model(temperature=0.3, meta_every=2, virtual_step="head")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        meta_optimizer=keras.optimizers.Adam(1e-3),
    )
    model.fit(clid_stream(x, y), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.temperature, loaded.meta_every, loaded.meta_objective) == (0.3, 2, "clid")
    assert loaded.virtual_step == "head"
    assert isinstance(loaded.meta_model, MetaWeightNet)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert isinstance(loaded.meta_optimizer, keras.optimizers.Adam)
    for original, restored in [(model.optimizer, loaded.optimizer), (model.meta_optimizer, loaded.meta_optimizer)]:
        assert int(restored.iterations.numpy()) == int(original.iterations.numpy()) > 0
        for a, b in zip(original.variables, restored.variables):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    loaded.fit(clid_stream(x, y), epochs=1, verbose=0)


def test_paper_meta_optimizer_is_one_argument_away():
    model = tiny_model()
    model.compile(meta_optimizer="paper")
    assert float(model.meta_optimizer.learning_rate.numpy()) == pytest.approx(1e-5)
    model.compile()
    assert float(model.meta_optimizer.learning_rate.numpy()) == pytest.approx(1e-3)


@pytest.mark.parametrize("meta_model, kind", [("wnet", keras.optimizers.Adam), ("vri", keras.optimizers.Adam)])
def test_a_given_meta_learning_rate_keeps_the_default_optimizer_kind(meta_model, kind):
    # `clidmu-tf train --meta-learning-rate` goes through this function: only the rate changes.
    from clidmu_tf.models.clidmu_model import default_meta_optimizer

    model = tiny_model(meta_model)
    model.compile()
    assert type(model.meta_optimizer) is kind
    changed = default_meta_optimizer(model.meta_model, learning_rate=0.25)
    assert type(changed) is kind
    assert float(changed.learning_rate.numpy()) == pytest.approx(0.25)
    assert changed.weight_decay == model.meta_optimizer.weight_decay


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"meta_model": "mwnet"}, "meta_model='mwnet'"),
        ({"meta_objective": "clean"}, "meta_objective='clean'"),
        ({"temperature": 0}, "temperature=0"),
        ({"meta_every": 0}, "meta_every=0"),
        ({"virtual_step": "last"}, "virtual_step='last'"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CLIDMUModel(backbones.mlp((6,), 3, hidden_units=(8,)), **kwargs)


def test_backbone_without_features_is_rejected():
    inputs = keras.Input((6,))
    with pytest.raises(ValueError, match="feature_layer"):
        CLIDMUModel(keras.Model(inputs, keras.layers.Dense(3)(inputs)))


def test_fit_data_is_checked_before_training():
    x, y = tiny_data()
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    weights = [w.copy() for w in model.backbone.get_weights()]
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    with pytest.raises(ValueError, match=r"\(\(x, y\), x_meta\)"):
        model.fit(plain, verbose=0)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        model.fit(x, y, verbose=0)
    bad_labels = np.where(y == 0, 3, y).astype("int32")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.fit(clid_stream(x, bad_labels), verbose=0)
    one_meta = tf.data.Dataset.zip((plain, tf.data.Dataset.from_tensor_slices(x).batch(1).repeat()))
    with pytest.raises(ValueError, match="at least 2"):
        model.fit(one_meta, verbose=0)
    labelled = tiny_model(meta_objective="ce_noisy")
    labelled.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match=r"\(x_meta, y_meta\)"):
        labelled.fit(clid_stream(x, y), verbose=0)
    for before, after in zip(weights, model.backbone.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_fit_rejects_user_sample_weights():
    x, y = tiny_data()
    model = tiny_model(meta_objective="none")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(x, y, sample_weight=np.ones(len(y)), verbose=0)
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(x, y, class_weight={0: 2.0}, verbose=0)


def test_compile_rejects_a_loss():
    with pytest.raises(ValueError, match="loss="):
        tiny_model().compile(loss="mse")


def test_per_sample_weights_checks_lengths():
    x, y = tiny_data()
    model = tiny_model("vri")
    weights = model.per_sample_weights(x, y, batch_size=16)
    assert weights.shape == (40,) and np.all((weights > 0) & (weights < 1))
    with pytest.raises(ValueError, match=r"one per input \(N=40\)"):
        model.per_sample_weights(x, y[:-1])


@pytest.mark.parametrize("meta_model", ["wnet", "vri"])
def test_mixed_precision_keeps_losses_in_float32(meta_model):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        x, y = tiny_data()
        model = tiny_model(meta_model)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        history = model.fit(clid_stream(x, y), epochs=1, verbose=0, validation_data=(x, y))
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.backbone.compute_dtype == "float16"
    assert all(np.isfinite(values[-1]) for values in history.history.values())


def test_backbone_regularisation_losses_are_applied_like_keras():
    x, y = tiny_data(n=10)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.5), name="hidden"
    )(inputs)
    user_model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    reference = keras.models.clone_model(user_model)
    reference.set_weights(user_model.get_weights())
    reference.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model = CLIDMUModel(user_model, feature_layer="hidden", meta_objective="none")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(x, y, batch_size=10, epochs=1, verbose=0, shuffle=False)
    reference_history = reference.fit(x, y, batch_size=10, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(reference_history.history["loss"][0], rel=1e-5)
    for got, expected in zip(model.backbone.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_second_fit_costs_no_more_than_the_first():
    """Destroying a used tf.data iterator can wait seconds for its autotuning thread; `fit`
    leaves that to a background thread, at the end of each epoch and of `fit`."""
    x, y = tiny_data(n=40)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    destroyed_on = []

    class WatchIterators(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            iterator = self.model._epoch_iterator.iterator
            if not any(seen() is iterator for seen in watched):
                watched.append(weakref.ref(iterator))
                weakref.finalize(iterator, lambda: destroyed_on.append(threading.get_ident()))

    durations, watched = [], []
    for _ in range(2):
        start = time.perf_counter()
        model.fit(clid_stream(x, y), epochs=2, verbose=0, callbacks=[WatchIterators()])
        durations.append(time.perf_counter() - start)
    for thread in threading.enumerate():
        if thread.name == "release_dataset_iterator":
            thread.join(timeout=120)
    # Four epochs, four iterators, none destroyed on the training thread.
    assert len(watched) == len(destroyed_on) == 4
    assert threading.get_ident() not in destroyed_on, destroyed_on
    # The first fit also traces the step.
    assert durations[1] <= durations[0] + 0.5, durations


def test_a_saved_cross_entropy_model_with_a_head_virtual_step_still_loads():
    # Saved before virtual_step="head" was refused without a meta update (the command
    # line's baseline beside a head-only method), where it changed nothing.
    with pytest.raises(ValueError, match="virtual_step='head' with meta_objective='none'"):
        tiny_model(meta_objective="none", virtual_step="head")
    config = tiny_model(meta_objective="none").get_config()
    loaded = CLIDMUModel.from_config({**config, "virtual_step": "head"})
    assert (loaded.meta_objective, loaded.virtual_step) == ("none", "full")


def test_a_model_saved_before_weight_normalization_loads_with_the_authors_normalisation():
    from clidmu_tf.meta_models import VRIRectifier

    class UserRectifier(VRIRectifier):
        pass

    # A rectifier of the user's own class has no sample weights either.
    meta_models = {"wnet": "batch", "vri": None, UserRectifier(3, name="rectifier"): None}
    with keras.saving.custom_object_scope({"UserRectifier": UserRectifier}):
        for meta_model, expected in meta_models.items():
            config = tiny_model(meta_model=meta_model).get_config()
            del config["weight_normalization"]
            assert CLIDMUModel.from_config(config).weight_normalization == expected
    config = tiny_model(meta_objective="none").get_config()
    del config["weight_normalization"]
    assert CLIDMUModel.from_config(config).weight_normalization is None


def test_fit_under_a_mirrored_strategy_with_one_replica():
    # One device (a CPU-only machine, or one GPU): the meta step's guarded update must not
    # put optimizer.apply (a synchronisation point under any strategy) inside ops.cond, or
    # fit fails at the first step ("`merge_call` called while defining a new graph"). The
    # other strategy tests run on conftest's two logical CPUs, two replicas.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert strategy.num_replicas_in_sync == 1
    rng = np.random.default_rng(0)
    x = rng.random((32, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 3, 32).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    meta = tf.data.Dataset.from_tensor_slices(x[:16]).repeat().batch(16)
    with strategy.scope():
        model = CLIDMUModel(backbones.mlp((4, 4, 1), num_classes=3), seed=0)
        model.compile()
    history = model.fit(tf.data.Dataset.zip((train, meta)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.parametrize("meta_every", [1, 2])
def test_train_on_batch_takes_one_fit_element(meta_every):
    # Keras hands train_step `(x, y, sample_weight)`: a `((x, y), x_meta)` element passed as
    # `train_on_batch(x=(x, y), y=x_meta)` arrives as a triple.
    x, y = tiny_data(n=10)
    model = tiny_model(meta_every=meta_every)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    for _ in range(3):
        logs = model.train_on_batch((x, y), x, return_dict=True)
    assert np.isfinite(logs["meta_loss"])
    assert int(model.optimizer.iterations.numpy()) == 3
    # Steps 0, 1, 2: a meta update at each, or at steps 0 and 2.
    assert int(model.meta_optimizer.iterations.numpy()) == (3 if meta_every == 1 else 2)
    with pytest.raises(ValueError, match="sample_weight"):
        model.train_on_batch((x, y), x, sample_weight=np.ones(10, "float32"))


def test_train_on_batch_with_a_meta_update_is_refused_on_several_replicas(two_cpu_strategy):
    # It failed inside TensorFlow ("You must feed a value for placeholder tensor").
    x, y = tiny_data(n=10)
    with two_cpu_strategy.scope():
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="meta_objective='clid', 2 replicas"):
        model.train_on_batch((x, y), x)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_a_subclassed_backbone_is_refused_without_sending_the_user_back_here():
    # The message used to advise passing a subclassed model "straight to CLIDMUModel",
    # which is where it came from.
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, activation="relu")
            self.head = keras.layers.Dense(3)

        def call(self, x):
            features = self.hidden(x)
            return {"logits": self.head(features), "features": features}

    backbone = Subclassed()
    backbone(np.zeros((1, 6), "float32"))
    with pytest.raises(ValueError, match="functional API") as error:
        CLIDMUModel(backbone)
    assert "CLIDMUModel with a call()" not in str(error.value)
