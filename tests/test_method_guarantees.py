"""Guarantees of method.md checked where getting them wrong would show.

Each test compares one training step with a reference computed by hand, on a set-up where the
wrong variant gives a different number: the meta-model moves far in its update, the backbone
has BatchNorm fed with shifted data, and the step runs on two replicas.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLIDMUModel, backbones, clid_loss
from tests.test_clidmu_model import normalized_weights_reference

LEARNING_RATE = 0.5


def data(n, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (shift + scale * rng.normal(size=(n, 6))).astype("float32")
    y = rng.integers(0, 3, n).astype("int32")
    return x, y


def batch_norm_backbone():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="dense")(inputs)
    hidden = keras.layers.BatchNormalization(name="batch_norm")(hidden)
    features = keras.layers.Activation("relu", name="features")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(features))


def weighted_loss(meta_model, labels, logits, normalization):
    """The method's weighted cross-entropy, written out (Meta-Weight-Net, normalised weights)."""
    per_sample = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    weights = meta_model(tf.stop_gradient(per_sample)[:, None])[:, 0]
    return tf.reduce_sum(normalized_weights_reference(weights, labels, normalization) * per_sample)


def sgd_step_by_hand(backbone, meta_model, x, y, normalization):
    """The backbone's weights after one plain SGD step on the weighted loss."""
    with tf.GradientTape() as tape:
        loss = weighted_loss(meta_model, y, backbone(x, training=True)["logits"], normalization)
    gradients = tape.gradient(loss, backbone.trainable_variables)
    return [
        variable.numpy() - LEARNING_RATE * gradient.numpy()
        for variable, gradient in zip(backbone.trainable_variables, gradients)
    ]


@pytest.mark.parametrize("normalization", ["batch", "class"])
def test_real_step_reweights_with_the_meta_model_after_its_update(normalization):
    x, y = data(12, seed=0)
    x_meta, _ = data(12, seed=1)
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(
        backbones.mlp((6,), 3, hidden_units=(8,)), seed=0, weight_normalization=normalization
    )
    # A large meta step, so that the meta-model before and after its update weigh the
    # batch visibly differently.
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        meta_optimizer=keras.optimizers.SGD(300.0),
    )
    backbone_before = model.backbone.get_weights()
    meta_before = keras.models.clone_model(model.meta_model)
    meta_before.set_weights(model.meta_model.get_weights())
    stream = tf.data.Dataset.zip(
        (tf.data.Dataset.from_tensors((x, y)), tf.data.Dataset.from_tensors(x_meta).repeat())
    )
    model.fit(stream, epochs=1, verbose=0)
    assert int(model.meta_optimizer.iterations.numpy()) == 1

    reference_backbone = keras.models.clone_model(model.backbone)
    reference_backbone.set_weights(backbone_before)
    with_updated = sgd_step_by_hand(reference_backbone, model.meta_model, x, y, normalization)
    with_stale = sgd_step_by_hand(reference_backbone, meta_before, x, y, normalization)
    # The test can tell the two apart: the meta update changed the real step.
    gap = max(np.max(np.abs(a - b)) for a, b in zip(with_updated, with_stale))
    assert gap > 1e-3
    for got, expected in zip(model.backbone.get_weights(), with_updated):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=gap / 20)


def reference_meta_gradient(model, x, y, x_meta, training):
    """d CLID(fast model on the meta batch) / d meta-model, with nested tapes, by hand."""
    backbone = model.backbone
    moving_statistics = [variable.numpy() for variable in backbone.non_trainable_variables]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            logits = backbone(x, training=True)["logits"]
            loss = weighted_loss(model.meta_model, y, logits, model.weight_normalization)
        gradients = inner.gradient(loss, backbone.trainable_variables)
        fast = [v - LEARNING_RATE * g for v, g in zip(backbone.trainable_variables, gradients)]
        outputs, _ = backbone.stateless_call(fast, moving_statistics, x_meta, training=training)
        meta_loss = clid_loss(outputs["features"], outputs["logits"], model.temperature)
    for variable, value in zip(backbone.non_trainable_variables, moving_statistics):
        variable.assign(value)
    return [g.numpy() for g in outer.gradient(meta_loss, model.meta_model.trainable_variables)]


def test_virtual_step_runs_the_meta_batch_in_training_mode():
    x, y = data(16, seed=2)
    # Far from BatchNorm's initial moving statistics (mean 0, variance 1), so the training
    # mode (batch statistics) and the inference mode give different fast outputs.
    x_meta, _ = data(16, seed=3, shift=4.0, scale=3.0)
    keras.utils.set_random_seed(1)
    model = CLIDMUModel(batch_norm_backbone(), feature_layer="features", seed=1)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    model.build_optimizers()

    training_mode = reference_meta_gradient(model, x, y, x_meta, training=True)
    inference_mode = reference_meta_gradient(model, x, y, x_meta, training=False)
    gap = max(np.max(np.abs(a - b)) for a, b in zip(training_mode, inference_mode))
    scale = max(np.max(np.abs(a)) for a in training_mode)
    assert gap > 0.1 * scale, "the two modes must differ for the test to mean anything"

    with tf.GradientTape(persistent=True) as tape:
        outputs = model.backbone(x, training=True)
    _, analytic = model.meta_gradients(tape, outputs, tf.constant(y), x_meta)
    for got, expected in zip(analytic, training_mode):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-3, atol=1e-3 * scale)


def test_two_replicas_move_the_meta_model_like_the_mean_of_their_meta_gradients(
    two_cpu_strategy,
):
    """Each replica's meta loss is divided by the number of replicas (method: mean over them)."""
    x, y = data(20, seed=4)
    x_meta, _ = data(20, seed=5)
    meta_learning_rate = 5.0
    strategy = two_cpu_strategy
    with strategy.scope():
        keras.utils.set_random_seed(2)
        distributed = CLIDMUModel(backbones.mlp((6,), 3, hidden_units=(8,)), seed=2)
        distributed.compile(
            optimizer=keras.optimizers.SGD(LEARNING_RATE),
            meta_optimizer=keras.optimizers.SGD(meta_learning_rate),
        )
    single = CLIDMUModel(backbones.mlp((6,), 3, hidden_units=(8,)), seed=2)
    single.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    single.build_optimizers()
    single.backbone.set_weights(distributed.backbone.get_weights())
    single.meta_model.set_weights(distributed.meta_model.get_weights())
    meta_before = [w.copy() for w in single.meta_model.get_weights()]

    # The global batch of 20 is split in order: replica r gets samples [10 r, 10 r + 10).
    per_replica = []
    for r in range(2):
        part = slice(10 * r, 10 * r + 10)
        with tf.GradientTape(persistent=True) as tape:
            outputs = single.backbone(x[part], training=True)
        _, gradients = single.meta_gradients(tape, outputs, tf.constant(y[part]), x_meta[part])
        per_replica.append([g.numpy() for g in gradients])
    mean_gradient = [np.mean(pair, axis=0) for pair in zip(*per_replica)]
    expected = [w - meta_learning_rate * g for w, g in zip(meta_before, mean_gradient)]
    summed = [w - meta_learning_rate * 2 * g for w, g in zip(meta_before, mean_gradient)]
    gap = max(np.max(np.abs(a - b)) for a, b in zip(expected, summed))
    assert gap > 1e-3

    stream = tf.data.Dataset.zip(
        (
            tf.data.Dataset.from_tensor_slices((x, y)).batch(20),
            tf.data.Dataset.from_tensor_slices(x_meta).batch(20).repeat(),
        )
    )
    distributed.fit(stream, epochs=1, verbose=0)
    for got, want in zip(distributed.meta_model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=gap / 20)
