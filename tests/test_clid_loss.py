import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLID, CLIDLoss, clid_loss


def prototype_batch(seed=0):
    """method.md's reference batch: 100 samples, 10 classes, class prototypes in R^512."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(10, 512))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    labels = np.repeat(np.arange(10), 10)
    features = prototypes[labels].astype("float32")
    confident = (20.0 * np.eye(10)[labels]).astype("float32")
    return features, confident


@pytest.mark.parametrize(
    "temperature, confident_value, zero_value",
    [(0.1, 2.303, 11.151), (0.5, 3.116, 4.889), (1.0, 3.776, 4.662)],
)
def test_reference_values(temperature, confident_value, zero_value):
    features, confident = prototype_batch()
    assert float(clid_loss(features, confident, temperature)) == pytest.approx(confident_value, abs=1e-3)
    zeros = np.zeros_like(confident)
    assert float(clid_loss(features, zeros, temperature)) == pytest.approx(zero_value, abs=1e-3)


def numpy_clid_with_fixed_row_sums(features, logits, temperature, row_sums):
    """CLID in float64 with the feature side and the output row sums held constant."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = np.maximum(unit @ unit.T / temperature, 0.0)
    target = np.exp(similarity) / np.exp(similarity).sum(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    v = probabilities / np.linalg.norm(probabilities, axis=1, keepdims=True)
    prediction = (v @ v.T) / row_sums
    return np.mean(np.sum(prediction * -np.log(target + 1e-7), axis=1))


def output_row_sums(logits):
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    v = probabilities / np.linalg.norm(probabilities, axis=1, keepdims=True)
    return (v @ v.T).sum(axis=1, keepdims=True)


def test_logit_gradient_matches_finite_differences_with_fixed_row_sums():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(6, 5))
    logits = rng.normal(size=(6, 4))
    logits_tensor = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits_tensor)
        loss = clid_loss(tf.constant(features, tf.float32), logits_tensor, 0.5)
    analytic = tape.gradient(loss, logits_tensor).numpy()

    row_sums = output_row_sums(logits)
    numeric = np.zeros_like(logits)
    step = 1e-5
    for index in np.ndindex(logits.shape):
        shifted = logits.copy()
        shifted[index] += step
        up = numpy_clid_with_fixed_row_sums(features, shifted, 0.5, row_sums)
        shifted[index] -= 2 * step
        down = numpy_clid_with_fixed_row_sums(features, shifted, 0.5, row_sums)
        numeric[index] = (up - down) / (2 * step)
    np.testing.assert_allclose(analytic, numeric, atol=2e-5, rtol=1e-3)
    # Without the stop-gradient on the row sums the gradient would differ.
    assert np.abs(numeric).max() > 1e-3


def test_no_gradient_reaches_features():
    rng = np.random.default_rng(2)
    features = tf.constant(rng.normal(size=(8, 5)), tf.float32)
    logits = tf.constant(rng.normal(size=(8, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = clid_loss(features, logits)
    gradient = tape.gradient(loss, features)
    assert gradient is None or not np.any(gradient.numpy())


@pytest.mark.parametrize(
    "features, logits",
    [
        (np.ones((5, 4)), np.random.default_rng(0).normal(size=(5, 3))),
        (np.zeros((5, 4)), np.random.default_rng(0).normal(size=(5, 3))),
        (np.random.default_rng(0).normal(size=(2, 4)), np.zeros((2, 3))),
        (np.random.default_rng(0).normal(size=(5, 4)), np.zeros((5, 1))),
        (np.random.default_rng(0).normal(size=(5, 4)), np.tile([50.0, 0.0, 0.0], (5, 1))),
    ],
    ids=["identical_features", "zero_features", "batch_of_two", "one_class", "one_predicted_class"],
)
def test_degenerate_batches_are_finite(features, logits):
    value = clid_loss(features.astype("float32"), logits.astype("float32"))
    assert np.isfinite(float(value))
    logits_tensor = tf.constant(logits, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(logits_tensor)
        loss = clid_loss(tf.constant(features, tf.float32), logits_tensor)
    assert np.all(np.isfinite(tape.gradient(loss, logits_tensor).numpy()))


def test_float16_inputs_are_computed_in_float32():
    features, confident = prototype_batch()
    value = clid_loss(features.astype("float16"), (confident / 4).astype("float16"), 0.5)
    assert value.dtype == tf.float32
    reference = clid_loss(
        features.astype("float16").astype("float32"), (confident / 4).astype("float32"), 0.5
    )
    assert float(value) == pytest.approx(float(reference), abs=1e-6)


@pytest.mark.parametrize("temperature", [0, -1, 0.0, "0.5", None])
def test_rejects_invalid_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        clid_loss(np.ones((3, 2)), np.ones((3, 2)), temperature)
    with pytest.raises(ValueError, match="temperature"):
        CLIDLoss(temperature=temperature)


def test_rejects_bad_shapes_and_tiny_batches():
    with pytest.raises(ValueError, match="at least 2"):
        clid_loss(np.ones((1, 4)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="same batch"):
        clid_loss(np.ones((4, 4)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="features"):
        clid_loss(np.ones((4,)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="logits"):
        clid_loss(np.ones((4, 2)), np.ones((4, 3, 1)))


def test_loss_class_and_metric_agree_with_the_function():
    features, confident = prototype_batch()
    expected = float(clid_loss(features, confident, 0.5))
    assert float(CLIDLoss(0.5)(None, {"features": features, "logits": confident})) == pytest.approx(expected)

    metric = CLID(temperature=0.5)
    metric.update_state(None, {"features": features[:60], "logits": confident[:60]})
    metric.update_state(None, {"features": features[60:], "logits": confident[60:]})
    first = float(clid_loss(features[:60], confident[:60], 0.5))
    second = float(clid_loss(features[60:], confident[60:], 0.5))
    assert float(metric.result()) == pytest.approx((60 * first + 40 * second) / 100, rel=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_loss_and_metric_configs_round_trip():
    loss = CLIDLoss.from_config(CLIDLoss(temperature=0.3).get_config())
    metric = CLID.from_config(CLID(temperature=0.7, name="meta_clid").get_config())
    assert loss.temperature == 0.3
    assert (metric.temperature, metric.name) == (0.7, "meta_clid")
