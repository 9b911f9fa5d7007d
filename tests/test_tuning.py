"""Tests of the keras-tuner integration: searches on a few digits, a tiny MLP, 1-2 epochs."""

import json

import keras
import keras_tuner
import numpy as np
import pytest
from sklearn.datasets import load_digits

from clidmu_tf import CLIDMUModel
from clidmu_tf.models.clidmu_model import DEFAULT_WEIGHT_NORMALIZATION
from clidmu_tf.tuning import CLIDMUHyperModel, held_out_scores, run_search

NUM_TRAIN = 150
NUM_VAL = 60


@pytest.fixture(scope="module")
def digits():
    """Digits with 40% symmetric noise on the training and validation labels."""
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    clean = data.target.astype("int32")
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(len(clean)) < 0.4, rng.integers(0, 10, len(clean)), clean)
    train = slice(0, NUM_TRAIN)
    val = slice(NUM_TRAIN, NUM_TRAIN + NUM_VAL)
    return {
        "x_train": x[train],
        "y_train": noisy[train].astype("int32"),
        "x_val": x[val],
        "y_val": noisy[val].astype("int32"),
        "y_val_clean": clean[val],
    }


def small_space():
    """Keeps the MLP small; the rest of the space is searched."""
    hp = keras_tuner.HyperParameters()
    hp.Fixed("width_multiplier", 0.125)
    hp.Fixed("batch_size", 50)
    return hp


def assert_all_completed(summary):
    statuses = [trial["status"] for trial in summary["trials"]]
    assert statuses == ["COMPLETED"] * len(statuses), [t.get("message") for t in summary["trials"]]


def test_val_clid_search_selects_and_reloads_best_model(digits, tmp_path):
    tuner, summary = run_search(
        digits["x_train"],
        digits["y_train"],
        digits["x_val"],
        digits["y_val"],
        num_classes=10,
        max_trials=2,
        epochs=2,
        hyperparameters=small_space(),
        directory=tmp_path,
        seed=1,
    )
    assert_all_completed(summary)
    assert len(summary["trials"]) == 2
    assert tuner.oracle.objective.name == "val_clid"
    assert tuner.oracle.objective.direction == "min"
    scores = [trial["score"] for trial in summary["trials"]]
    assert summary["best"]["score"] == min(scores)
    best_trial = next(t for t in summary["trials"] if t["trial_id"] == summary["best"]["trial_id"])
    assert {"val_clid", "val_loss", "val_accuracy"} <= set(best_trial["metrics"])
    json.dumps(summary)

    best_model = tuner.get_best_models(1)[0]
    assert isinstance(best_model, CLIDMUModel)
    assert best_model.predict(digits["x_val"], verbose=0).shape == (NUM_VAL, 10)
    # The reloaded weights are the checkpoint of the best epoch: they reproduce its score.
    reloaded = held_out_scores(best_model, digits["x_val"], digits["y_val"])
    np.testing.assert_allclose(reloaded["clid"], summary["best"]["score"], rtol=1e-5)
    np.testing.assert_allclose(
        reloaded["accuracy"], best_trial["metrics"]["val_accuracy"], rtol=1e-6
    )
    # The reloaded model, optimiser state included, trains on.
    best_hp = tuner.get_best_hyperparameters(1)[0]
    history = tuner.hypermodel.fit(
        best_hp, best_model, digits["x_train"], digits["y_train"], epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][-1])


# The Bayesian tuner's run is slow (about 25 s); the random one keeps the default run.
@pytest.mark.parametrize(
    "tuner", [pytest.param("bayesian", marks=pytest.mark.slow), keras_tuner.RandomSearch]
)
def test_clean_label_objective(digits, tmp_path, tuner):
    search_tuner, summary = run_search(
        digits["x_train"],
        digits["y_train"],
        digits["x_val"],
        digits["y_val"],
        y_val_clean=digits["y_val_clean"],
        num_classes=10,
        objective="val_clean_accuracy",
        tuner=tuner,
        max_trials=2,
        epochs=1,
        hyperparameters=small_space(),
        directory=tmp_path,
        seed=2,
    )
    assert_all_completed(summary)
    assert search_tuner.oracle.objective.direction == "max"
    scores = [trial["score"] for trial in summary["trials"]]
    assert summary["best"]["score"] == max(scores)
    for trial in summary["trials"]:
        assert trial["score"] == trial["metrics"]["val_clean_accuracy"]
        assert "val_clid" in trial["metrics"]


@pytest.mark.slow  # two searches, about 35 s
def test_seed_zero_repeats_the_search(digits, tmp_path):
    # keras-tuner's oracles take seed 0 for "no seed"; run_search must still repeat.
    searches = [
        run_search(
            digits["x_train"],
            digits["y_train"],
            digits["x_val"],
            num_classes=10,
            max_trials=2,
            epochs=1,
            hyperparameters=small_space(),
            directory=tmp_path / str(run),
            seed=0,
        )[1]
        for run in range(2)
    ]
    first, second = ([trial["hyperparameters"] for trial in s["trials"]] for s in searches)
    assert first == second
    assert first[0] != first[1]


def test_fixed_space_without_validation_labels(digits, tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("width_multiplier", 0.125)
    hp.Float("temperature", 0.1, 1.5)
    tuner = keras_tuner.RandomSearch(
        CLIDMUHyperModel((8, 8, 1), 10, seed=0),
        objective=keras_tuner.Objective("val_clid", "min"),
        max_trials=2,
        hyperparameters=hp,
        tune_new_entries=False,
        directory=tmp_path,
    )
    tuner.search(digits["x_train"], digits["y_train"], validation_data=digits["x_val"], epochs=1)
    trials = list(tuner.oracle.trials.values())
    assert [trial.status for trial in trials] == ["COMPLETED"] * 2
    for trial in trials:
        values = trial.hyperparameters.values
        # Only the temperature was searched; the rest kept the defaults.
        assert values["learning_rate"] == 0.05
        assert values["meta_learning_rate"] == 1e-3
        assert values["meta_size"] == 1000
        assert values["meta_every"] == 1
        assert values["batch_size"] == 100
        assert trial.metrics.exists("val_clid")
        assert not trial.metrics.exists("val_accuracy")
    temperatures = {trial.hyperparameters.values["temperature"] for trial in trials}
    assert len(temperatures) == 2


def test_diverging_trial_is_marked_failed(digits, tmp_path):
    hp = small_space()
    hp.Fixed("learning_rate", 1e4)
    tuner = keras_tuner.RandomSearch(
        CLIDMUHyperModel((8, 8, 1), 10, seed=0),
        objective=keras_tuner.Objective("val_clid", "min"),
        max_trials=1,
        hyperparameters=hp,
        directory=tmp_path,
    )
    tuner.search(
        digits["x_train"],
        digits["y_train"],
        validation_data=(digits["x_val"], digits["y_val"]),
        epochs=2,
        verbose=0,
    )
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "FAILED"
    assert "Training diverged" in trial.message


@pytest.mark.parametrize(
    "meta_model, meta_objective", [("wnet", "clid"), ("vri", "clid"), ("wnet", "none")]
)
def test_build_uses_paper_defaults(meta_model, meta_objective):
    hypermodel = CLIDMUHyperModel(
        (8, 8, 1), 10, meta_model=meta_model, meta_objective=meta_objective
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert isinstance(model, CLIDMUModel)
    assert model.compiled and model.optimizer.built
    assert model.meta_objective == meta_objective
    assert model.temperature == 0.5
    assert model.meta_every == 1
    assert model.backbone.output["features"].shape[-1] == 128
    expected_learning_rate = {"wnet": 0.05, "vri": 0.02}[meta_model]
    np.testing.assert_allclose(float(model.optimizer.learning_rate), expected_learning_rate)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == 0.9
    if meta_objective == "none":
        # The batch size is defined in `fit`, where the data (arrays or batches) is known.
        assert set(hp.values) == {"learning_rate", "backbone", "width_multiplier"}
    else:
        expected_meta_learning_rate = {"wnet": 1e-3, "vri": 1e-2}[meta_model]
        np.testing.assert_allclose(
            float(model.meta_optimizer.learning_rate), expected_meta_learning_rate
        )
        assert hp.values["meta_size"] == 1000


def test_virtual_step_is_the_same_for_every_trial():
    assert CLIDMUHyperModel((8, 8, 1), 10).build(keras_tuner.HyperParameters()).virtual_step == (
        "full"
    )
    head = CLIDMUHyperModel((8, 8, 1), 10, virtual_step="head")
    hp = keras_tuner.HyperParameters()
    assert head.build(hp).virtual_step == "head"
    assert "virtual_step" not in hp.values
    with pytest.raises(ValueError, match=r"`virtual_step`.*Received: virtual_step='last'"):
        CLIDMUHyperModel((8, 8, 1), 10, virtual_step="last")


def test_weight_normalization_is_the_same_for_every_trial():
    hp = keras_tuner.HyperParameters()
    model = CLIDMUHyperModel((8, 8, 1), 10, weight_normalization="class").build(hp)
    assert model.weight_normalization == "class"
    assert "weight_normalization" not in hp.values
    default = CLIDMUHyperModel((8, 8, 1), 10).build(keras_tuner.HyperParameters())
    assert default.weight_normalization == DEFAULT_WEIGHT_NORMALIZATION
    vri = CLIDMUHyperModel((8, 8, 1), 10, meta_model="vri").build(keras_tuner.HyperParameters())
    assert vri.weight_normalization is None
    with pytest.raises(ValueError, match=r"weight_normalization='class' with meta_model='vri'"):
        CLIDMUHyperModel((8, 8, 1), 10, meta_model="vri", weight_normalization="class")


def test_backbone_choice_and_width():
    hypermodel = CLIDMUHyperModel((8, 8, 1), 10, backbone=["small_cnn", "mlp"])
    hp = keras_tuner.HyperParameters()
    hp.Fixed("backbone", "mlp")
    hp.Fixed("width_multiplier", 0.5)
    model = hypermodel.build(hp)
    assert model.backbone.name == "mlp"
    assert model.backbone.output["features"].shape[-1] == 64
    default = hypermodel.build(keras_tuner.HyperParameters())
    assert default.backbone.name == "small_cnn"
