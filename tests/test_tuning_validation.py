"""Tests of held-out scoring and of the tuning tools' argument checks (no searches run)."""

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLIDMUModel, backbones, clid_loss
from clidmu_tf.tuning import CLIDMUHyperModel, HeldOutValidation, held_out_scores, run_search

RNG = np.random.default_rng(0)
X = RNG.random((40, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 10, 40).astype("int32")


def tiny_model():
    return CLIDMUModel(backbones.mlp((8, 8, 1), 10, hidden_units=(16,)), seed=0)


def test_held_out_scores_match_their_definitions():
    model = tiny_model()
    scores = held_out_scores(model, X, Y, temperature=0.3, batch_size=16)
    outputs = model.backbone(X, training=False)
    logits = keras.ops.convert_to_numpy(outputs["logits"])
    features = keras.ops.convert_to_numpy(outputs["features"])
    # Batches of 16, 16 and 8, averaged by size.
    per_batch = [
        float(clid_loss(features[start : start + 16], logits[start : start + 16], 0.3))
        for start in (0, 16, 32)
    ]
    expected_clid = np.average(per_batch, weights=[16, 16, 8])
    np.testing.assert_allclose(scores["clid"], expected_clid, rtol=1e-5)
    np.testing.assert_allclose(scores["accuracy"], np.mean(logits.argmax(-1) == Y))
    expected_loss = keras.losses.sparse_categorical_crossentropy(Y, logits, from_logits=True)
    np.testing.assert_allclose(scores["loss"], np.mean(expected_loss), rtol=1e-5)
    assert set(held_out_scores(model, X, batch_size=16)) == {"clid"}


def test_held_out_validation_writes_logs_for_later_callbacks():
    model = tiny_model()
    model.compile()
    train = tf.data.Dataset.from_tensor_slices((X, Y)).batch(20)
    meta = tf.data.Dataset.from_tensor_slices(X).batch(20).repeat()
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(dict(logs))
    )
    history = model.fit(
        tf.data.Dataset.zip((train, meta)),
        epochs=2,
        callbacks=[HeldOutValidation(X, Y, prefix="val_clean_", batch_size=20), recorder],
        verbose=0,
    )
    assert len(history.history["val_clean_accuracy"]) == 2
    assert {"val_clean_accuracy", "val_clean_loss", "val_clean_clid"} <= set(seen[-1])
    expected = held_out_scores(model, X, Y, batch_size=20)
    np.testing.assert_allclose(seen[-1]["val_clean_clid"], expected["clid"], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"y": Y[:10]}, "y"),
        ({"y": Y, "prefix": ""}, "prefix"),
        ({"temperature": 0.0}, "temperature"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_held_out_validation_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        HeldOutValidation(X, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"input_shape": (8, -8)}, "input_shape"),
        ({"num_classes": 1}, "num_classes"),
        ({"backbone": "vgg"}, "backbone"),
        ({"backbone": []}, "backbone"),
        ({"meta_model": "mlc"}, "meta_model"),
        ({"meta_objective": "ce_clean"}, "meta_objective"),
        ({"validation_temperature": -1}, "validation_temperature"),
        ({"validation_batch_size": 0}, "validation_batch_size"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_hypermodel_rejects_bad_arguments(kwargs, name):
    arguments = {"input_shape": (8, 8, 1), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`") as error:
        CLIDMUHyperModel(**arguments)
    assert "Received:" in str(error.value)


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((X[:, :4], Y), {}, "x"),
        ((X, Y[:5]), {}, "y"),
        ((X, Y + 10), {}, "y"),
        ((X, Y), {"validation_data": (X, Y[:3])}, "y_val"),
        ((X, Y), {"validation_data": (X, Y, Y)}, "validation_data"),
        ((X, Y), {"batch_size": 8}, "batch_size"),
    ],
)
def test_hypermodel_fit_stops_the_search_on_bad_data(args, kwargs, name):
    hypermodel = CLIDMUHyperModel((8, 8, 1), 10)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    # A FatalValueError is a ValueError that keras-tuner does not swallow into a trial status.
    with pytest.raises(keras_tuner.errors.FatalValueError, match=f"`{name}`"):
        hypermodel.fit(hp, model, *args, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"objective": "val_f1"}, "objective"),
        ({"objective": "val_accuracy", "y_val": None}, "y_val"),
        ({"objective": "val_clean_accuracy"}, "y_val_clean"),
        ({"tuner": "grid"}, "tuner"),
        ({"max_trials": 0}, "max_trials"),
        ({"epochs": 1.5}, "epochs"),
        ({"x_train": X.reshape(-1)}, "x_train"),
        ({"x_val": X[:, :4]}, "x_val"),
        ({"y_train": Y[:5]}, "y_train"),
        ({"y_train": Y + 0.5}, "y_train"),
        ({"y_train": np.eye(10, dtype="int32")[Y]}, "y_train"),
        ({"x_val": np.where(X > 0.99, np.nan, X)}, "x_val"),
        ({"x_train": {"a": X}}, "x_train"),
        ({"y_val_clean": -Y - 1}, "y_val_clean"),
        ({"num_classes": 3}, "y_train"),
    ],
)
def test_run_search_rejects_bad_arguments_before_training(kwargs, name, tmp_path):
    arguments = {"x_train": X, "y_train": Y, "x_val": X, "y_val": Y, "directory": tmp_path}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        run_search(**arguments)
    assert not any(tmp_path.iterdir())
