import keras
import numpy as np
import pytest

from clidmu_tf import backbones


@pytest.mark.parametrize(
    "build, input_shape, feature_dim",
    [
        (lambda s: backbones.mlp(s, 4, hidden_units=(16, 8)), (6,), 8),
        (lambda s: backbones.small_cnn(s, 4, widths=(4, 8)), (8, 8, 3), 8),
        (lambda s: backbones.resnet32(s, 4, blocks_per_stage=1, widths=(4, 8, 8)), (8, 8, 3), 8),
        (lambda s: backbones.preact_resnet18(s, 4, widths=(4, 4, 8, 8)), (8, 8, 3), 8),
        (lambda s: backbones.wide_resnet(10, 1, s, 4), (8, 8, 3), 64),
    ],
    ids=["mlp", "small_cnn", "resnet32", "preact_resnet18", "wide_resnet"],
)
def test_backbones_return_logits_and_features(build, input_shape, feature_dim):
    model = build(input_shape)
    outputs = model(np.zeros((3, *input_shape), "float32"), training=False)
    assert set(outputs) == {"logits", "features"}
    assert tuple(outputs["logits"].shape) == (3, 4)
    assert tuple(outputs["features"].shape) == (3, feature_dim)


def test_paper_backbones_have_their_published_sizes():
    assert backbones.resnet32((32, 32, 3), 10).count_params() == pytest.approx(0.47e6, rel=0.02)
    assert backbones.wide_resnet(28, 10, (32, 32, 3), 10).count_params() == pytest.approx(36.5e6, rel=0.01)


def test_batch_norm_uses_pytorch_equivalent_settings():
    model = backbones.small_cnn((8, 8, 1), 3, widths=(4,))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(n.momentum == 0.9 and n.epsilon == 1e-5 for n in norms)


def test_from_model_adapts_a_user_model_by_feature_layer():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(7, activation="relu", name="penultimate")(inputs)
    user_model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    backbone = backbones.from_model(user_model, feature_layer="penultimate")
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    outputs = backbone(x)
    np.testing.assert_allclose(outputs["logits"], user_model(x), rtol=1e-6)
    assert tuple(outputs["features"].shape) == (4, 7)
    dict_model = backbones.mlp((5,), 3)
    assert backbones.from_model(dict_model) is dict_model


def test_from_model_errors_name_the_problem():
    inputs = keras.Input((5,))
    user_model = keras.Model(inputs, keras.layers.Dense(3, name="out")(inputs))
    with pytest.raises(ValueError, match="feature_layer=None"):
        backbones.from_model(user_model)
    with pytest.raises(ValueError, match="feature_layer='nope'"):
        backbones.from_model(user_model, feature_layer="nope")
    no_features = keras.Model(inputs, {"logits": keras.layers.Dense(3)(inputs)})
    with pytest.raises(ValueError, match="'logits' and 'features'"):
        backbones.from_model(no_features)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        backbones.from_model(Subclassed())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (8, 8, 1), "num_classes": 1}, "num_classes"),
        ({"input_shape": (8, -1, 1), "num_classes": 3}, "input_shape"),
        ({"input_shape": 5, "num_classes": 3}, "input_shape"),
    ],
)
def test_backbone_arguments_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backbones.small_cnn(**kwargs)


def test_wide_resnet_depth_is_validated():
    with pytest.raises(ValueError, match="depth=27"):
        backbones.wide_resnet(27, 2, (8, 8, 3), 3)
