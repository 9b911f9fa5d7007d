import keras
import numpy as np
import pytest

from clidmu_tf import MetaWeightNet, VRIRectifier


def built_wnet(**kwargs):
    net = MetaWeightNet(seed=0, **kwargs)
    net.build((None, 1))
    return net


def test_meta_weight_net_uses_the_authors_initialisation_by_default():
    net = built_wnet()
    hidden_kernel, hidden_bias = net.hidden.kernel.numpy(), net.hidden.bias.numpy()
    out_kernel, out_bias = net.weight_head.kernel.numpy(), net.weight_head.bias.numpy()
    # PyTorch Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    for values, limit in [(hidden_kernel, 1.0), (hidden_bias, 1.0), (out_kernel, 0.1), (out_bias, 0.1)]:
        assert np.abs(values).max() <= limit
        assert np.abs(values).max() > 0.6 * limit
    assert hidden_kernel.shape == (1, 100) and out_kernel.shape == (100, 1)


def test_meta_weight_net_keras_initialisation_is_an_option():
    net = built_wnet(initialization="keras")
    assert not np.any(net.hidden.bias.numpy())
    with pytest.raises(ValueError, match="initialization='torch'"):
        MetaWeightNet(initialization="torch")


def test_meta_weight_net_maps_losses_to_weights_in_unit_interval():
    weights = built_wnet()(np.linspace(0, 10, 50, dtype="float32")[:, None]).numpy()
    assert weights.shape == (50, 1)
    assert np.all((weights > 0) & (weights < 1))


def test_meta_weight_net_round_trips_through_keras_file(tmp_path):
    net = built_wnet(hidden_units=20)
    path = tmp_path / "wnet.keras"
    net.save(path)
    loaded = keras.saving.load_model(path)
    losses = np.array([[0.1], [3.0]], "float32")
    np.testing.assert_allclose(loaded(losses), net(losses), rtol=1e-6)


def test_vri_rectifier_samples_in_training_and_is_deterministic_in_inference():
    rectifier = VRIRectifier(num_classes=3, hidden_units=(16, 8), seed=0)
    features = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1])
    first = rectifier([features, labels], training=True).numpy()
    second = rectifier([features, labels], training=True).numpy()
    inference = rectifier([features, labels], training=False).numpy()
    assert first.shape == (5, 3)
    assert np.all((first > 0) & (first < 1))
    assert not np.allclose(first, second)
    np.testing.assert_allclose(inference, rectifier([features, labels], training=False).numpy())
    mean, _ = rectifier.distribution(features, labels)
    np.testing.assert_allclose(inference, keras.ops.sigmoid(mean).numpy(), rtol=1e-6)


def test_vri_rectifier_config_round_trip():
    rectifier = VRIRectifier(num_classes=4, hidden_units=(8,), label_embedding_dim=5, seed=1)
    clone = VRIRectifier.from_config(rectifier.get_config())
    assert (clone.num_classes, clone.hidden_units, clone.label_embedding_dim) == (4, (8,), 5)
    with pytest.raises(ValueError, match="num_classes"):
        VRIRectifier(num_classes=0)
