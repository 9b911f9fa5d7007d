"""A hyperparameter search for CLIDMUModel in one call, with a JSON-able summary."""

import math

import keras_tuner
import numpy as np
import tensorflow as tf

from clidmu_tf.tuning.clidmu_hyper_model import (
    DEFAULT_META_SIZE,
    META_SIZES,
    CLIDMUHyperModel,
    dataset_arrays,
)
from clidmu_tf.tuning.held_out_validation import HeldOutValidation
from clidmu_tf.validation import (
    check_all_classes_present,
    check_bool,
    check_choice,
    check_class_ids,
    check_finite_inputs,
    check_positive_int,
)

# The objectives `run_search` produces, and which way is better. `val_clid` needs no labels;
# `val_loss` and `val_accuracy` use the (noisy) validation labels; the `val_clean_*` ones
# need clean validation labels, which `run_search` takes as `y_val_clean`.
OBJECTIVES = {
    "val_clid": "min",
    "val_loss": "min",
    "val_accuracy": "max",
    "val_clean_loss": "min",
    "val_clean_accuracy": "max",
}

TUNERS = {
    "random": keras_tuner.RandomSearch,
    "bayesian": keras_tuner.BayesianOptimization,
}


def run_search(
    x_train,
    y_train=None,
    x_val=None,
    y_val=None,
    *,
    y_val_clean=None,
    num_classes=None,
    objective="val_clid",
    tuner="random",
    max_trials=10,
    epochs=10,
    backbone="mlp",
    meta_model="wnet",
    meta_objective="clid",
    hyperparameters=None,
    tune_new_entries=True,
    validation_temperature=0.5,
    validation_batch_size=100,
    x_unlabeled=None,
    directory=None,
    project_name="clidmu_tuning",
    overwrite=False,
    seed=None,
    callbacks=None,
    verbose=0,
    virtual_step="full",
    weight_normalization=None,
):
    """Searches `CLIDMUHyperModel`'s space on noisy data and ranks trials by `objective`.

    The default objective, `val_clid`, is CLID over the validation inputs: it reads no
    labels, so a search needs no clean data. With the noisy validation labels `y_val`,
    `val_accuracy` and `val_loss` can be the objective too; with clean validation labels
    `y_val_clean` (when a user has some), `val_clean_accuracy` and `val_clean_loss` are
    logged for every trial and can be the objective. All of them appear in the summary.

    When the training set is smaller than the largest `meta_size` choice, the `meta_size`
    choices are cut to the sizes that differ (those below it, and the whole set), unless
    `hyperparameters` defines `meta_size` or `tune_new_entries` is False (training arrays
    only: a dataset's length is not known before a pass over it).

    The data may come as `tf.data`: a finite dataset of `(x, y)` batches as `x_train` (with
    `y_train=None`; its batch size is then every trial's, and `batch_size` leaves the search
    space), and a dataset of `(x, y)` or `x` batches as `x_val` (read once into arrays), for
    example `run_search(train_ds, x_val=val_ds, num_classes=10)`.

    Args:
        x_train: training inputs, an array of shape `[N, ...]`, or a `tf.data.Dataset` of
            `(x, y)` batches. A single input: multi-input data is refused.
        y_train: noisy integer training labels, shape `[N]`; None with a dataset.
        x_val: validation inputs, shape `[M, ...]`, or a `tf.data.Dataset` of `(x, y)` or
            `x` batches. Required.
        y_val: noisy validation labels `[M]`, or None (None when `x_val` is a dataset: its
            labels come from its batches).
        y_val_clean: clean validation labels `[M]`, in the order of the validation inputs,
            or None.
        num_classes: number of classes; inferred from the largest label when None (every
            class below it must then carry a label; pass it to declare empty classes).
            Needed when `x_train` is a dataset.
        objective: a name from `OBJECTIVES` (its direction is known), or a
            `keras_tuner.Objective` for anything else in the logs (for example from
            `callbacks`).
        tuner: `"random"`, `"bayesian"`, or a `keras_tuner.Tuner` subclass that takes
            `RandomSearch`'s arguments (for example one that also records each trial's
            history).
        max_trials: number of configurations tried.
        epochs: training epochs per trial; each trial keeps its best epoch by `objective`.
        backbone: a backbone name or a list of names to search (see `CLIDMUHyperModel`).
        meta_model: `"wnet"` or `"vri"`.
        meta_objective: `"clid"`, `"ce_noisy"`, `"mae_noisy"` or `"none"`.
        hyperparameters: a `keras_tuner.HyperParameters` that restricts or fixes part of
            the space.
        tune_new_entries: whether hyperparameters missing from `hyperparameters` are
            searched (True) or kept at their defaults (False).
        validation_temperature: temperature of `val_clid`, the same for every trial.
        validation_batch_size: batch size of `val_clid`, the same for every trial.
        x_unlabeled: None, or unlabelled inputs `[U, ...]` the meta set is drawn from
            instead of `x_train` (semi-supervised; `"clid"` and `"none"` only).
        directory: folder of the tuner's files (keras-tuner's default, the working folder,
            when None).
        project_name: sub-folder of this search.
        overwrite: whether to start afresh (True) or resume a search found there (False).
        seed: non-negative int or None; seeds the tuner (as `seed + 1`: keras-tuner takes
            0 for no seed), the meta set, the shuffling and the initialisation of every
            trial.
        callbacks: extra Keras callbacks for every trial.
        verbose: verbosity of the search and of `fit`.
        virtual_step: `"full"` (the paper's) or `"head"`, for every trial (see
            `CLIDMUHyperModel`); `"head"` needs a `meta_objective` other than `"none"`.
        weight_normalization: `"batch"`, `"class"` or None (the default for the meta-model),
            for every trial (see `CLIDMUModel`).

    Returns:
        A tuple `(tuner, summary)`: the keras-tuner tuner (`tuner.get_best_models()`
        reloads trained models) and the JSON-able dict of `search_summary(tuner)`.

    Raises:
        ValueError: for inputs of mismatched shapes or lengths, labels out of range, an
            unknown objective or tuner, an objective whose labels were not given, a missing
            `x_val`, a dataset of another structure than `(x, y)` batches, non-positive
            `max_trials` or `epochs`, or a `tune_new_entries` or `overwrite` that is not a
            bool. Raised before any training.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> x = np.random.rand(120, 8, 8, 1).astype("float32")
    >>> y = np.random.randint(0, 10, 120)
    >>> tuner, summary = run_search(
    ...     x[:80], y[:80], x[80:], y[80:], num_classes=10, max_trials=2, epochs=1,
    ...     directory=tempfile.mkdtemp(), seed=0)
    >>> [trial["status"] for trial in summary["trials"]]
    ['COMPLETED', 'COMPLETED']
    """
    if x_val is None:
        raise ValueError(
            "`x_val` is required: trials are ranked on held-out inputs (by CLID, which reads "
            "no labels, by default). Received: x_val=None"
        )
    if isinstance(x_val, tf.data.Dataset):
        if y_val is not None:
            raise ValueError(
                "Received a tf.data.Dataset as `x_val` and labels as `y_val`: the labels go "
                "in the dataset's batches, as `(x, y)` pairs. Pass y_val=None."
            )
        x_val = dataset_arrays("x_val", x_val)
        if isinstance(x_val, tuple):
            x_val, y_val = x_val
    objective = _check_objective(objective, y_val, y_val_clean)
    if isinstance(tuner, type) and issubclass(tuner, keras_tuner.Tuner):
        tuner_class = tuner
    else:
        tuner_class = TUNERS[check_choice("tuner", tuner, TUNERS)]
    check_positive_int("max_trials", max_trials)
    check_positive_int("epochs", epochs)
    tune_new_entries = check_bool("tune_new_entries", tune_new_entries)
    overwrite = check_bool("overwrite", overwrite)
    for name, value in (("x_train", x_train), ("x_val", x_val)):
        if isinstance(value, (dict, tuple)):
            raise ValueError(
                f"`run_search` builds every trial's backbone from the shape of `x_train` and "
                f"takes a single input array. Received: {name} of type {type(value).__name__} "
                "(multi-input data: build and tune the models with keras-tuner directly)"
            )
    training_dataset = isinstance(x_train, tf.data.Dataset)
    if training_dataset:
        input_shape = _dataset_input_shape(x_train, y_train, num_classes)
    else:
        x_train = np.asarray(x_train)
        if x_train.ndim < 2 or len(x_train) == 0:
            raise ValueError(
                "Received an invalid value for `x_train`, expected a non-empty array of shape "
                f"[N, ...] or a tf.data.Dataset of (x, y) batches. Received: x_train of shape "
                f"{x_train.shape}"
            )
        if y_train is None:
            raise ValueError(
                "`y_train` is required with training arrays: pass the noisy training labels, "
                "or a tf.data.Dataset of (x, y) batches as `x_train`. Received: y_train=None"
            )
        input_shape = x_train.shape[1:]
    x_val = np.asarray(x_val)
    if x_val.shape[1:] != tuple(input_shape) or len(x_val) == 0:
        raise ValueError(
            "Received an invalid value for `x_val`, expected a non-empty array of shape "
            f"[M, {', '.join(map(str, input_shape))}] like the training inputs. Received: "
            f"x_val of shape {x_val.shape}"
        )
    labels = {} if training_dataset else {"y_train": (y_train, len(x_train))}
    labels["y_val"] = (y_val, len(x_val))
    labels["y_val_clean"] = (y_val_clean, len(x_val))
    labels = {
        name: check_class_ids(value, name, length=length)
        for name, (value, length) in labels.items()
        if value is not None
    }
    if not training_dataset:
        # A training dataset's batches are checked by CLIDMUModel.fit in each trial.
        check_finite_inputs(x_train, "x_train")
    check_finite_inputs(x_val, "x_val")
    if num_classes is None:
        known = np.concatenate(list(labels.values()))
        num_classes = int(known.max()) + 1
        check_all_classes_present(known, num_classes, "y_train")
    for name, value in labels.items():
        check_class_ids(value, name, num_classes=check_positive_int("num_classes", num_classes))

    hypermodel = CLIDMUHyperModel(
        input_shape,
        num_classes,
        backbone=backbone,
        meta_model=meta_model,
        meta_objective=meta_objective,
        validation_temperature=validation_temperature,
        validation_batch_size=validation_batch_size,
        unlabeled_inputs=x_unlabeled,
        seed=seed,
        virtual_step=virtual_step,
        weight_normalization=weight_normalization,
    )
    if x_unlabeled is not None:
        meta_pool = len(hypermodel.unlabeled_inputs)
    else:
        # A training dataset's size is known only after a pass over it.
        meta_pool = None if training_dataset else len(x_train)
    hp = keras_tuner.HyperParameters() if hyperparameters is None else hyperparameters.copy()
    if (
        tune_new_entries
        and meta_pool is not None
        and meta_objective != "none"
        and "meta_size" not in hp.values
        and meta_pool < max(META_SIZES)
    ):
        # Larger choices would all be cut to the whole meta pool: the same trial twice.
        sizes = [size for size in META_SIZES if size < meta_pool] + [meta_pool]
        hp.Choice("meta_size", sizes, default=min(DEFAULT_META_SIZE, meta_pool))
    search_tuner = tuner_class(
        hypermodel,
        objective=objective,
        max_trials=max_trials,
        # keras-tuner's oracles read seed 0 as "no seed" and draw one at random, which
        # would make `seed=0` searches unrepeatable.
        seed=None if seed is None else seed + 1,
        hyperparameters=hp,
        tune_new_entries=tune_new_entries,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
    )
    callbacks = list(callbacks or [])
    if "y_val_clean" in labels:
        callbacks.insert(
            0,
            HeldOutValidation(
                x_val,
                labels["y_val_clean"],
                prefix="val_clean_",
                temperature=validation_temperature,
                batch_size=validation_batch_size,
            ),
        )
    search_tuner.search(
        x_train,
        labels.get("y_train"),
        validation_data=(x_val, labels.get("y_val")),
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    return search_tuner, search_summary(search_tuner)


def search_summary(tuner):
    """A JSON-able account of a keras-tuner search: every trial and the best one.

    Args:
        tuner: a keras-tuner tuner, during or after its search.

    Returns:
        A dict with `"objective"` (`name`, `direction`), `"trials"` (each with `trial_id`,
        `status`, `hyperparameters`, `score`, `best_epoch`, the logged `metrics` at that
        epoch and, for trials that did not complete, keras-tuner's `message`) and
        `"best"` (the best completed trial's `trial_id`, `score` and `hyperparameters`, or
        None). Non-finite numbers are written as None.
    """
    objective = tuner.oracle.objective
    trials = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda trial: trial.trial_id):
        summary = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            "hyperparameters": dict(trial.hyperparameters.values),
            "score": _json_float(trial.score),
            "best_epoch": trial.best_step,
            "metrics": {
                name: _json_float(trial.metrics.get_last_value(name))
                for name in sorted(trial.metrics.metrics)
            },
        }
        if trial.status != keras_tuner.engine.trial.TrialStatus.COMPLETED:
            summary["message"] = trial.message
        trials.append(summary)
    best = [
        trial
        for trial in tuner.oracle.get_best_trials(1)
        if trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED
    ]
    return {
        "objective": {"name": objective.name, "direction": objective.direction},
        "trials": trials,
        "best": (
            {
                "trial_id": best[0].trial_id,
                "score": _json_float(best[0].score),
                "hyperparameters": dict(best[0].hyperparameters.values),
            }
            if best
            else None
        ),
    }


def _dataset_input_shape(dataset, labels, num_classes):
    """The input shape of a training dataset of `(x, y)` batches, checked for `run_search`."""
    if labels is not None:
        raise ValueError(
            "Received a tf.data.Dataset as `x_train` and labels as `y_train`: the labels go in "
            "the dataset's batches, as `(x, y)` pairs. Pass y_train=None."
        )
    if num_classes is None:
        raise ValueError(
            "`num_classes` is needed when `x_train` is a tf.data.Dataset: its labels are not "
            "read before the search. Received: num_classes=None"
        )
    spec = dataset.element_spec
    if not (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], tf.TensorSpec)
        and spec[0].shape.rank is not None
        and spec[0].shape.rank >= 2
        and spec[0].shape[1:].is_fully_defined()
    ):
        raise ValueError(
            "Received an invalid value for `x_train`, expected a tf.data.Dataset of `(x, y)` "
            "batches with inputs of a known shape [B, ...], for example "
            "`tf.data.Dataset.from_tensor_slices((x, y)).batch(100)`. Received: a dataset of "
            f"element_spec={spec}"
        )
    return tuple(spec[0].shape[1:])


def _check_objective(objective, y_val, y_val_clean):
    if isinstance(objective, keras_tuner.Objective):
        name = objective.name
    elif objective in OBJECTIVES:
        name = objective
        objective = keras_tuner.Objective(objective, OBJECTIVES[objective])
    else:
        raise ValueError(
            f"Received an invalid value for `objective`, expected one of {sorted(OBJECTIVES)} "
            f"or a keras_tuner.Objective. Received: objective={objective!r}"
        )
    if name in ("val_loss", "val_accuracy") and y_val is None:
        raise ValueError(
            f"The objective {name!r} scores the noisy validation labels, but `y_val` is "
            "None. Pass `y_val`, or use objective='val_clid', which needs no labels."
        )
    if name.startswith("val_clean_") and y_val_clean is None:
        raise ValueError(
            f"The objective {name!r} scores clean validation labels, but `y_val_clean` is "
            "None. Pass `y_val_clean`, or use objective='val_clid', which needs no labels."
        )
    return objective


def _json_float(value):
    if value is None or not math.isfinite(value):
        return None
    return float(value)
