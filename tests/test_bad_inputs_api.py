"""Bad inputs to the library, one row each: the call, the exception, the words of its message.

Each kind of mistake is tried where it can enter: labels that are not integer class ids of
shape [N], labels that leave inferred classes empty, NaN or inf in the inputs, numbers that
are not finite, a softmax the backbone cannot unwrap, multi-input data where one input is
needed. Calls to `fit` also check that not a single step was taken.
"""

import argparse
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from clidmu_tf import CLID, CLIDMUModel, backbones, clid_loss
from clidmu_tf.callbacks import CLIDSnapshotEnsemble
from clidmu_tf.cli import cli_utils
from clidmu_tf.pipelines import InMemoryDataset, corrupt_labels, from_arrays, make_training_data
from clidmu_tf.tuning import HeldOutValidation, held_out_scores, run_search

RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 6)).astype("float32")
Y = (np.arange(20) % 3).astype("int32")
ONE_HOT = np.eye(3, dtype="float32")[Y]
WITH_NAN = X.copy()
WITH_NAN[3, 2] = np.nan
WITH_INF = X.copy()
WITH_INF[5, 0] = np.inf
CONTRACT = "integer class ids of shape [N]"


def model(**kwargs):
    keras.utils.set_random_seed(0)
    built = CLIDMUModel(backbones.mlp((6,), 3, hidden_units=(8,)), seed=0, **kwargs)
    built.compile(optimizer=keras.optimizers.SGD(0.1))
    return built


def clid_stream(x=X, y=Y, x_meta=X):
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    meta = tf.data.Dataset.from_tensor_slices(x_meta).batch(10).repeat()
    return tf.data.Dataset.zip((train, meta))


def fit(target, *args, **kwargs):
    """`target.fit`, checking that a refused call took no training step."""
    try:
        target.fit(*args, verbose=0, **kwargs)
    finally:
        assert int(target.optimizer.iterations.numpy()) == 0, "trained before refusing"


def dataset(**kwargs):
    arguments = dict(name="t", x_train=X, y_train=Y, x_test=X[:6], y_test=Y[:6], num_classes=3)
    arguments.update(kwargs)
    return InMemoryDataset(**arguments)


def nested_softmax_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    return keras.Model(inputs, head(hidden))


def search(**kwargs):
    arguments = dict(x_train=X, y_train=Y, x_val=X, y_val=Y, max_trials=1, epochs=1)
    arguments.update(kwargs)
    return run_search(**arguments)


CASES = {
    # A1: labels that are not integer class ids of shape [N], wherever labels enter.
    "from_arrays one-hot y": (
        lambda: from_arrays(X, ONE_HOT),
        ["`y`", CONTRACT, "(20, 3)", "one-hot"],
    ),
    "from_arrays fractional y": (lambda: from_arrays(X, Y + 0.5), ["`y`", CONTRACT, "0.5"]),
    "from_arrays string y": (lambda: from_arrays(X, Y.astype(str)), ["`y`", CONTRACT, "<U1"]),
    "from_arrays one-hot y_test": (
        lambda: from_arrays(X, Y, x_test=X, y_test=ONE_HOT),
        ["`y_test`", CONTRACT, "(20, 3)"],
    ),
    "from_arrays y_clean of another length": (
        lambda: from_arrays(X, Y, y_clean=Y[:5]),
        ["`y_clean`", "one per input (N=20)"],
    ),
    "InMemoryDataset one-hot y_train": (lambda: dataset(y_train=ONE_HOT), ["`y_train`", CONTRACT]),
    "corrupt_labels one-hot": (
        lambda: corrupt_labels(ONE_HOT, kind="symmetric", rate=0.2, num_classes=3, seed=0),
        ["`labels`", CONTRACT],
    ),
    "fit dataset with one-hot y": (
        lambda: fit(model(), clid_stream(y=ONE_HOT)),
        ["`y`", CONTRACT, "(10, 3)"],
    ),
    "fit dataset with labels out of range": (
        lambda: fit(model(), clid_stream(y=Y + 1)),
        ["`y`", "[0, 3)", "3"],
    ),
    "fit arrays with string labels": (
        lambda: fit(model(meta_objective="none"), X, Y.astype(str)),
        ["`y`", CONTRACT],
    ),
    "fit validation_data one-hot": (
        lambda: fit(model(), clid_stream(), validation_data=(X, ONE_HOT)),
        ["validation_data[1]", CONTRACT, "(20, 3)"],
    ),
    "fit validation_data dataset with fractional labels": (
        lambda: fit(
            model(),
            clid_stream(),
            validation_data=tf.data.Dataset.from_tensor_slices((X, Y + 0.25)).batch(10),
        ),
        ["validation_data y", CONTRACT, "0.25"],
    ),
    "evaluate one-hot": (lambda: model().evaluate(X, ONE_HOT, verbose=0), ["`y`", CONTRACT]),
    "per_sample_weights one-hot": (
        lambda: model().per_sample_weights(X, ONE_HOT),
        ["`y`", CONTRACT],
    ),
    "per_sample_weights out of range": (
        lambda: model().per_sample_weights(X, Y + 5),
        ["`y`", "[0, 3)"],
    ),
    "run_search one-hot y_train": (lambda: search(y_train=ONE_HOT), ["`y_train`", CONTRACT]),
    "HeldOutValidation one-hot y": (lambda: HeldOutValidation(X, ONE_HOT), ["`y`", CONTRACT]),
    "held_out_scores fractional y": (
        lambda: held_out_scores(model(), X, Y + 0.5, batch_size=10),
        ["`y`", CONTRACT],
    ),
    # A2: a stray large label would silently make empty classes.
    "from_arrays stray label 99": (
        lambda: from_arrays(X, np.where(np.arange(20) == 7, 99, Y)),
        ["96 of the 100 inferred classes", "largest label, 99", "1 sample", "num_classes=100"],
    ),
    "run_search stray label": (
        lambda: search(y_train=np.where(np.arange(20) == 7, 9, Y)),
        ["`y_train`", "largest label, 9", "num_classes=10"],
    ),
    # A3: NaN or inf in the inputs, refused where they enter, with count and first index.
    "from_arrays NaN in x": (lambda: from_arrays(WITH_NAN, Y), ["`x`", "1 NaN or inf", "x[3, 2]"]),
    "from_arrays inf in x_test": (
        lambda: from_arrays(X, Y, x_test=WITH_INF, y_test=Y),
        ["`x_test`", "1 NaN or inf", "x_test[5, 0]=inf"],
    ),
    "InMemoryDataset NaN in x_train": (
        lambda: dataset(x_train=WITH_NAN),
        ["`x_train`", "NaN or inf"],
    ),
    "fit dataset with NaN in the first batch": (
        lambda: fit(model(), clid_stream(x=WITH_NAN)),
        ["`x`", "NaN or inf", "x[3, 2]"],
    ),
    "fit dataset with inf in the meta batch": (
        lambda: fit(model(), clid_stream(x_meta=WITH_INF)),
        ["`x_meta`", "NaN or inf", "x_meta[5, 0]"],
    ),
    "fit arrays with inf": (
        lambda: fit(model(meta_objective="none"), WITH_INF, Y),
        ["`x`", "1 NaN or inf", "x[5, 0]"],
    ),
    "fit validation_data with NaN": (
        lambda: fit(model(), clid_stream(), validation_data=(WITH_NAN, Y)),
        ["validation_data[0]", "NaN or inf"],
    ),
    "evaluate NaN": (lambda: model().evaluate(WITH_NAN, Y, verbose=0), ["`x`", "NaN or inf"]),
    "snapshot meta_data with NaN": (
        lambda: CLIDSnapshotEnsemble(WITH_NAN, directory="unused"),
        ["`meta_data`", "NaN or inf"],
    ),
    "run_search NaN in x_val": (lambda: search(x_val=WITH_NAN), ["`x_val`", "NaN or inf"]),
    # A5: numbers must be finite as well as in range.
    "CLIDMUModel temperature inf": (
        lambda: CLIDMUModel(backbones.mlp((6,), 3), temperature=math.inf),
        ["`temperature`", "temperature=inf"],
    ),
    "CLIDMUModel temperature nan": (
        lambda: CLIDMUModel(backbones.mlp((6,), 3), temperature=math.nan),
        ["`temperature`", "temperature=nan"],
    ),
    "CLIDMUModel meta_every inf": (
        lambda: CLIDMUModel(backbones.mlp((6,), 3), meta_every=math.inf),
        ["`meta_every`", "meta_every=inf"],
    ),
    "CLID metric temperature inf": (lambda: CLID(temperature=math.inf), ["temperature=inf"]),
    "clid_loss temperature nan": (
        lambda: clid_loss(X, X, temperature=math.nan),
        ["temperature=nan"],
    ),
    "compile learning rate inf": (
        lambda: model().compile(optimizer=keras.optimizers.SGD(math.inf)),
        ["`optimizer.learning_rate`", "inf"],
    ),
    "compile meta learning rate nan": (
        lambda: model().compile(meta_optimizer=keras.optimizers.SGD(math.nan)),
        ["`meta_optimizer.learning_rate`", "nan"],
    ),
    "snapshot temperature inf": (
        lambda: CLIDSnapshotEnsemble(X, temperature=math.inf, directory="unused"),
        ["`temperature`", "temperature=inf"],
    ),
    "snapshot top_k inf": (
        lambda: CLIDSnapshotEnsemble(X, top_k=math.inf, directory="unused"),
        ["`top_k`", "top_k=inf"],
    ),
    "held_out_scores temperature inf": (
        lambda: held_out_scores(model(), X, temperature=math.inf),
        ["`temperature`", "temperature=inf"],
    ),
    "noise rate nan": (
        lambda: corrupt_labels(Y, kind="symmetric", rate=math.nan, num_classes=3, seed=0),
        ["`rate`", "rate=nan"],
    ),
    "make_training_data noise rate inf": (
        lambda: make_training_data(dataset(), noise="symmetric", noise_rate=math.inf),
        ["`rate`", "rate=inf"],
    ),
    "make_training_data labeled_fraction nan": (
        lambda: make_training_data(dataset(), labeled_fraction=math.nan),
        ["`labeled_fraction`", "labeled_fraction=nan"],
    ),
    "command-line --temperature inf": (
        lambda: cli_utils.positive_float("inf"),
        argparse.ArgumentTypeError,
        ["positive finite number", "'inf'"],
    ),
    "from_arrays test_fraction nan": (
        lambda: from_arrays(X, Y, test_fraction=math.nan),
        ["`test_fraction`", "test_fraction=nan"],
    ),
    # A head-only virtual step where no meta update takes a virtual step.
    "CLIDMUModel head virtual step with meta_objective none": (
        lambda: CLIDMUModel(backbones.mlp((6,), 3), meta_objective="none", virtual_step="head"),
        ["`virtual_step`", "virtual_step='head'", "meta_objective='none'"],
    ),
    "run_search head virtual step with meta_objective none": (
        lambda: search(meta_objective="none", virtual_step="head"),
        ["`virtual_step`", "virtual_step='head'", "meta_objective='none'"],
    ),
    # A normalisation of sample weights where there are none.
    "CLIDMUModel weight normalization with VRI": (
        lambda: CLIDMUModel(backbones.mlp((6,), 3), meta_model="vri", weight_normalization="class"),
        ["`weight_normalization`", "weight_normalization='class'", "meta_model='vri'"],
    ),
    "CLIDMUModel weight normalization with meta_objective none": (
        lambda: CLIDMUModel(
            backbones.mlp((6,), 3), meta_objective="none", weight_normalization="batch"
        ),
        ["`weight_normalization`", "weight_normalization='batch'", "meta_objective='none'"],
    ),
    # An unknown value is named as such, not as one given to a method without weights.
    "TrainingJob weight normalization unknown": (
        lambda: training_job({"method": "clid-wnet", "weight_normalization": "Class"}),
        ["`weight_normalization`", "weight_normalization='Class'", "'batch', 'class'"],
    ),
    "run_search weight normalization unknown": (
        lambda: search(weight_normalization="sample"),
        ["`weight_normalization`", "weight_normalization='sample'"],
    ),
    # A6: a softmax that cannot be turned back into logits.
    "softmax inside a nested model": (
        lambda: CLIDMUModel(nested_softmax_model(), feature_layer="hidden"),
        ["softmax", "cannot be unwrapped", "last layer linear"],
    ),
    # A7: multi-input data where the tool builds a single-input backbone.
    "from_arrays multi-input x": (
        lambda: from_arrays({"a": X, "b": X}, Y),
        ["`from_arrays`", "single input", "x of type dict"],
    ),
    "run_search multi-input x": (
        lambda: search(x_train={"a": X}),
        ["`run_search`", "single input array", "x_train of type dict"],
    ),
}


def training_job(config):
    from clidmu_tf.cli.training_job import TrainingJob

    return TrainingJob(config, "run")


# A case is (call, words) when it raises ValueError, else (call, exception type, words).
TABLE = {
    name: case if len(case) == 3 else (case[0], ValueError, case[1]) for name, case in CASES.items()
}


@pytest.mark.parametrize("call, error, words", TABLE.values(), ids=TABLE.keys())
def test_bad_input_is_refused_with_a_clear_message(call, error, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    missing = [word for word in words if word not in message]
    assert not missing, f"{missing} not in: {message}"
    assert not any(tmp_path.iterdir()), "a refused call left files behind"


def test_accepted_label_forms_train_alike():
    """[N] ints, [N, 1] ints and whole-number floats are the same labels."""
    histories = []
    for labels in (Y, Y[:, None], Y.astype("float32")):
        target = model()
        histories.append(target.fit(clid_stream(y=labels), epochs=1, verbose=0).history["loss"])
    assert histories[1] == pytest.approx(histories[0])
    assert histories[2] == pytest.approx(histories[0])


def test_declared_empty_classes_are_kept_but_said_loudly():
    with pytest.warns(UserWarning, match=r"2 of its 5 classes have no training sample \(3, 4\)"):
        data = from_arrays(X, Y, num_classes=5)
    assert data.num_classes == 5
    with pytest.warns(UserWarning, match="no training sample"):
        assert from_arrays(X, Y, class_names="abcde").num_classes == 5


def _bool_arguments():
    """Every public bool argument of the library's entry points, as calls taking its value."""
    from clidmu_tf.callbacks import TrainingDynamicsRecorder
    from clidmu_tf.cli.training_job import TrainingJob
    from clidmu_tf.export import export_ensemble
    from clidmu_tf.pipelines import Augmentation, load_dataset, stratified_split
    from clidmu_tf.tuning import CLIDMUHyperModel

    def hypermodel_fit(value):
        import keras_tuner

        return CLIDMUHyperModel((6,), 3).fit(keras_tuner.HyperParameters(), None, X, Y, shuffle=value)

    return {
        "load_dataset stream": lambda value: load_dataset("digits", stream=value),
        "make_training_data augment_meta": lambda value: make_training_data(
            dataset(), augment_meta=value
        ),
        "Augmentation flip": lambda value: Augmentation(flip=value),
        "stratified_split balanced": lambda value: stratified_split(
            Y, size=3, seed=0, balanced=value
        ),
        "TrainingDynamicsRecorder resume": lambda value: TrainingDynamicsRecorder(
            X, Y, resume=value
        ),
        "CLIDSnapshotEnsemble resume": lambda value: CLIDSnapshotEnsemble(
            X, directory="snapshots", resume=value
        ),
        "run_search tune_new_entries": lambda value: search(tune_new_entries=value),
        "run_search overwrite": lambda value: search(overwrite=value),
        "CLIDMUHyperModel tunable": lambda value: CLIDMUHyperModel((6,), 3, tunable=value),
        "CLIDMUHyperModel.fit shuffle": hypermodel_fit,
        "export_ensemble overwrite": lambda value: export_ensemble(
            keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)]), "export",
            overwrite=value,
        ),
        "TrainingJob overwrite": lambda value: TrainingJob({}, "run", overwrite=value),
        "TrainingJob resume": lambda value: TrainingJob({}, "run", resume=value),
    }


BOOL_ARGUMENTS = _bool_arguments()


@pytest.mark.parametrize("value", ["yes", 1, None], ids=["str", "int", "None"])
@pytest.mark.parametrize("call", BOOL_ARGUMENTS.values(), ids=BOOL_ARGUMENTS.keys())
def test_bool_arguments_refuse_anything_but_a_bool(call, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = [key for key, entry in BOOL_ARGUMENTS.items() if entry is call][0].split()[-1]
    with pytest.raises(ValueError) as raised:
        call(value)
    assert str(raised.value) == (
        f"Received an invalid value for `{name}`, expected a bool (True or False). "
        f"Received: {name}={value!r}"
    )
    assert not any(tmp_path.iterdir()), "a refused call left files behind"


def test_numpy_bools_are_accepted_as_bools():
    from clidmu_tf.pipelines import Augmentation, load_dataset, stratified_split
    from clidmu_tf.validation import check_bool

    assert check_bool("flag", np.True_) is True and check_bool("flag", np.array([False])[0]) is False
    assert Augmentation(flip=np.True_).flip is True
    assert load_dataset("digits", stream=np.False_).num_classes == 10
    selected, _ = stratified_split(Y, size=3, seed=0, balanced=np.True_)
    np.testing.assert_array_equal(selected, stratified_split(Y, size=3, seed=0, balanced=True)[0])


def _seeded_calls(folder):
    from clidmu_tf.pipelines import load_dataset, stratified_split, stream_image_folder

    return {
        "stream_image_folder": lambda seed: stream_image_folder(str(folder), seed=seed),
        "load_dataset": lambda seed: load_dataset("digits", seed=seed),
        "make_training_data": lambda seed: make_training_data("digits", seed=seed),
        "corrupt_labels": lambda seed: corrupt_labels(
            Y, kind="symmetric", rate=0.2, num_classes=3, seed=seed
        ),
        "stratified_split": lambda seed: stratified_split(Y, size=3, seed=seed),
    }


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True], ids=["negative", "float", "str", "bool"])
@pytest.mark.parametrize("entry", ["stream_image_folder", "load_dataset", "make_training_data",
                                   "corrupt_labels", "stratified_split"])
def test_every_seed_argument_is_checked_by_one_rule(entry, seed, tmp_path):
    # A negative seed once reached NumPy, whose "expected non-negative integer" named
    # neither the argument nor the value.
    from PIL import Image

    for label in range(2):
        (tmp_path / f"c{label}").mkdir()
        for index in range(3):
            Image.new("L", (4, 4), 60 * index).save(tmp_path / f"c{label}" / f"{index}.png")
    with pytest.raises(ValueError) as raised:
        _seeded_calls(tmp_path)[entry](seed)
    assert str(raised.value) == (
        f"Received an invalid value for `seed`, expected a non-negative integer. "
        f"Received: seed={seed!r}"
    )
