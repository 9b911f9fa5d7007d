"""keras-tuner searches fed with tf.data: `(x, y)` batches for training, datasets for
validation, a clear fatal error for anything else."""

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf.tuning import CLIDMUHyperModel, run_search

INPUT_SHAPE = (6,)
NUM_CLASSES = 3


def arrays(num_samples, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, *INPUT_SHAPE)).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, num_samples).astype("int32")


def batches(x, y=None, batch_size=20):
    data = (x, y) if y is not None else x
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def small_space():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("width_multiplier", 0.0625)
    return hp


def tuner_for(tmp_path, hypermodel=None, objective="val_clid", direction="min"):
    return keras_tuner.RandomSearch(
        hypermodel or CLIDMUHyperModel(INPUT_SHAPE, NUM_CLASSES, seed=0),
        objective=keras_tuner.Objective(objective, direction),
        max_trials=1,
        hyperparameters=small_space(),
        directory=tmp_path,
    )


class StepCounter(keras.callbacks.Callback):
    """Counts the training steps of each epoch into `steps`, a list the test holds (keras-tuner
    hands each trial a deep copy of the callbacks, and the copy keeps the list)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def __deepcopy__(self, memo):
        return StepCounter(self.steps)

    def on_epoch_begin(self, epoch, logs=None):
        self.steps.append(0)

    def on_train_batch_end(self, batch, logs=None):
        self.steps[-1] += 1


def test_search_with_datasets_uses_their_batches(tmp_path):
    x, y = arrays(80, seed=0)
    x_val, y_val = arrays(30, seed=1)
    tuner = tuner_for(tmp_path, objective="val_accuracy", direction="max")
    steps = []
    tuner.search(
        batches(x, y, batch_size=16),
        validation_data=batches(x_val, y_val, batch_size=7),
        epochs=2,
        callbacks=[StepCounter(steps)],
        verbose=0,
    )
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED", trial.message
    assert "batch_size" not in trial.hyperparameters.values
    # 80 samples in batches of 16: the dataset's own batching, 5 steps an epoch.
    assert steps == [5, 5]
    assert trial.metrics.exists("val_clid") and trial.metrics.exists("val_accuracy")


def test_arrays_still_search_the_batch_size(tmp_path):
    x, y = arrays(80, seed=0)
    tuner = tuner_for(tmp_path)
    tuner.search(x, y, validation_data=arrays(30, seed=1)[0], epochs=1, verbose=0)
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED", trial.message
    assert trial.hyperparameters.values["batch_size"] in (32, 64, 100, 128, 256)


def test_the_meta_set_is_a_seeded_uniform_subset_of_one_pass():
    x = np.arange(100, dtype="float32")[:, None].repeat(INPUT_SHAPE[0], axis=1)
    dataset = batches(x, np.arange(100, dtype="int32") % NUM_CLASSES, batch_size=7)
    counts = np.zeros(100)
    for seed in range(300):
        hypermodel = CLIDMUHyperModel(INPUT_SHAPE, NUM_CLASSES, seed=seed)
        x_meta, y_meta, batch_size = hypermodel._draw_meta_set(dataset, 10)
        ids = x_meta[:, 0].astype(int)
        assert len(set(ids)) == 10 and batch_size == 7
        np.testing.assert_array_equal(y_meta, ids % NUM_CLASSES)
        counts[ids] += 1
    again, _, _ = CLIDMUHyperModel(INPUT_SHAPE, NUM_CLASSES, seed=299)._draw_meta_set(dataset, 10)
    np.testing.assert_array_equal(again, x_meta)
    # Each sample is kept with probability 10/100: 30 times in 300 draws on average, for the
    # first samples (which fill the reservoir) as for the last.
    assert counts.min() > 0
    assert 22 < counts[:10].mean() < 38 and 22 < counts[-10:].mean() < 38
    small, _, _ = CLIDMUHyperModel(INPUT_SHAPE, NUM_CLASSES, seed=0)._draw_meta_set(dataset, 500)
    assert sorted(small[:, 0].astype(int)) == list(range(100))


def test_a_dataset_without_labels_stops_the_search_with_what_to_pass(tmp_path):
    x, _ = arrays(40, seed=0)
    tuner = tuner_for(tmp_path)
    with pytest.raises(keras_tuner.errors.FatalValueError, match=r"\(x, y\)` batches"):
        tuner.search(batches(x), validation_data=batches(x), epochs=1, verbose=0)


@pytest.mark.parametrize(
    "make_x, y, match",
    [
        (lambda x, y: batches(x, y), "labels", "Pass y=None"),
        (lambda x, y: batches(x, y).repeat(), None, "infinite"),
        (lambda x, y: batches(x[:, :4], y), None, r"shape \[B, 6\]"),
        (lambda x, y: batches(x, y.astype("float32")), None, "integer labels"),
        (lambda x, y: x, None, "needs the noisy training labels"),
    ],
)
def test_fit_refuses_what_it_cannot_train_on(make_x, y, match):
    x, labels = arrays(40, seed=0)
    hypermodel = CLIDMUHyperModel(INPUT_SHAPE, NUM_CLASSES, seed=0)
    hp = small_space()
    model = hypermodel.build(hp)
    with pytest.raises(keras_tuner.errors.FatalValueError, match=match):
        hypermodel.fit(hp, model, make_x(x, labels), labels if y == "labels" else None)


def test_run_search_takes_datasets(tmp_path):
    x, y = arrays(80, seed=0)
    x_val, y_val = arrays(30, seed=1)
    y_val_clean = (y_val + 1) % NUM_CLASSES
    _, summary = run_search(
        batches(x, y),
        x_val=batches(x_val, y_val, batch_size=8),
        y_val_clean=y_val_clean,
        num_classes=NUM_CLASSES,
        objective="val_accuracy",
        max_trials=1,
        epochs=1,
        hyperparameters=small_space(),
        directory=tmp_path,
        seed=0,
    )
    (trial,) = summary["trials"]
    assert trial["status"] == "COMPLETED", trial.get("message")
    assert "batch_size" not in trial["hyperparameters"]
    assert {"val_accuracy", "val_clid", "val_clean_accuracy"} <= set(trial["metrics"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y_train": np.zeros(80, "int32")}, "Pass y_train=None"),
        ({"num_classes": None}, "`num_classes` is needed"),
        ({"x_val": None}, "`x_val` is required"),
    ],
)
def test_run_search_refuses_datasets_it_cannot_use(tmp_path, kwargs, match):
    x, y = arrays(80, seed=0)
    arguments = {
        "x_val": arrays(30, seed=1)[0],
        "num_classes": NUM_CLASSES,
        "directory": tmp_path,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        run_search(batches(x, y), **arguments)
    assert not list(tmp_path.iterdir())


def test_run_search_with_arrays_needs_their_labels(tmp_path):
    x, _ = arrays(80, seed=0)
    with pytest.raises(ValueError, match="`y_train` is required"):
        run_search(x, x_val=x, directory=tmp_path)
