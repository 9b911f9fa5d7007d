"""Ranking training samples by how likely their given label is wrong, from what training
already produced: the CLID snapshot ensemble, the meta-model and the training dynamics."""

import os

import numpy as np

from clidmu_tf.validation import check_choice, check_positive_int

# Each score is a label quality: higher means the given label is more likely right, the
# convention of cleanlab's `get_label_quality_scores`.
SCORES = {
    "early_loss": "minus the given label's cross-entropy averaged over the first third of the "
    "epochs, before wrong labels are memorised",
    "mean_weight": "the meta-model's weight of the sample averaged over the epochs",
    "margin": "the given label's logit minus the largest other logit, averaged over the "
    "epochs (the area under the margin of Pleiss et al., 2020)",
    "ensemble": "the CLID snapshot ensemble's probability of the given label (cleanlab's "
    "self-confidence label quality on the ensemble's predicted probabilities)",
    "final_weight": "the final meta-model's weight of the sample (ranking ties broken by the "
    "ensemble's probability of the given label)",
}
# The best ranking measured in BENCHMARKS.md ("Finding wrong labels").
DEFAULT_SCORE = "early_loss"
# Scores read from the records of `TrainingDynamicsRecorder`, with the array each one needs.
DYNAMICS_SCORES = {"mean_weight": "weight", "early_loss": "given_probability", "margin": "margin"}
# Probabilities are clipped before taking logs, so that a certain wrong label has a finite loss.
MIN_PROBABILITY = 1e-12
# How cleanlab counts the label issues (`cleanlab.count.num_label_issues`'s
# `estimation_method`) on each epoch's class probabilities: the count closest to the true
# number of flips in BENCHMARKS.md ("Finding wrong labels").
COUNT_ESTIMATION_METHOD = "off_diagonal_calibrated"


def label_issues(source, x=None, y=None, *, score=DEFAULT_SCORE, dynamics=None, batch_size=256):
    """Ranks training samples by how likely their given label is wrong, at no extra training.

    Everything comes from what training already produced: the per-epoch signals of
    `TrainingDynamicsRecorder`, the CLID snapshot ensemble's probabilities (method section
    6) and the meta-model's weights (Meta-Weight-Net's weight, or the VRI rectifier's value
    at the label). Wrong labels are learnt late, so the default score, the given label's
    loss over the first third of the epochs, separates them best (BENCHMARKS.md, "Finding
    wrong labels"); the final weights and the ensemble, whose epochs CLID often picks after
    the wrong labels were memorised, separate them less. The suggested number of label
    issues (`suggested_num_issues`) is the largest of cleanlab's confident-learning counts
    on the class probabilities of each of the same early epochs, which
    `TrainingDynamicsRecorder` keeps: on the ensemble's or the final model's probabilities,
    which have memorised many wrong labels, the count falls far short.

    Args:
        source: a run directory written by `clidmu-tf train` (its snapshot ensemble,
            `model.keras` and `training_dynamics.npz` are read), or a Keras model whose
            output is the logits `[N, C]`: a `CLIDMUModel` (its final weights and
            probabilities), or the ensemble of `load_snapshot_ensemble`.
        x: the training inputs, float32 as the model reads them, in the order the training
            dynamics were recorded: an array `[N, ...]`, or a finite `tf.data.Dataset` of
            input batches (such as `TrainingData.input_stream`), read once, batch by batch.
            For a run directory, None streams the run's own training samples (its dataset,
            at the positions of `training_labels.npz`), never holding them all.
        y: the given (possibly wrong) labels, integers `[N]`; None with `x=None` for a run
            directory.
        score: which ranking, one of `SCORES`: `"early_loss"` (default), `"mean_weight"`,
            `"margin"` (these three read the training dynamics), `"ensemble"`,
            `"final_weight"`.
        dynamics: with a model `source`, the records of `TrainingDynamicsRecorder` (its
            `dynamics()` dict, or the path of the `.npz` it wrote), needed by the scores
            `mean_weight`, `early_loss` and `margin` and by the suggested number of wrong
            labels. A run directory's own records are read when None.
        batch_size: positive int, the batch size of the pass over an array `x`.

    Returns:
        A dict:
        - `"ranking"`: int64 `[N]`, positions in `x`, the most likely wrong label first
          (ascending quality, ties broken by the probability of the given label);
        - `"quality"`: float64 `[N]`, the chosen score (higher: label more likely right);
        - `"score"`: the score's name;
        - `"num_issues"`: int, the estimate of how many labels are wrong, a suggested
          cut-off of the ranking (`suggested_num_issues`), or None without the recorded
          counts (no `dynamics`, or records written before they were kept);
        - `"probabilities"`: float64 `[N, C]`, the class probabilities (the ensemble's for
          a run directory, else the model's);
        - `"weights"`: float32 `[N]`, the final meta-model's weights, or None when the model
          has no trained meta-model (or, for a run directory, `score` does not need them);
        - `"held_out"`: bool `[N]`, for a run directory's own samples (`x=None`), True for
          those of the held-out selection set (`train --snapshot-selection held-out`: seen
          by the snapshot selection, never trained on); None otherwise (unknown).

    Raises:
        ValueError: for an unknown `score`; `x` and `y` of different lengths (for a
            dataset `x`, once it is read) or not matching the recorded dynamics; an infinite
            dataset `x`; labels outside the model's classes; a score
            that needs a meta-model or training dynamics the source does not have.
        FileNotFoundError: for a run directory without the files the score needs.
        ImportError: if cleanlab is not installed.

    Example:

    >>> issues = label_issues("runs/demo")  # doctest: +SKIP
    >>> issues["ranking"][: issues["num_issues"]]  # doctest: +SKIP
    array([ 812,   31, 1022, ...])

    Reference:
        Northcutt et al., "Confident Learning: Estimating Uncertainty in Dataset Labels",
        JAIR 2021 (cleanlab); Hu et al., "CLID-MU", KDD 2025.
    """
    check_choice("score", score, SCORES)
    check_positive_int("batch_size", batch_size)
    _import_cleanlab()  # Before any expensive work.
    held_out = None
    if isinstance(source, (str, os.PathLike)):
        x, y, models, dynamics, held_out = _read_run(source, x, y, score, dynamics, batch_size)
    else:
        models = {"probabilities": source, "weights": source}
    x, y = _check_inputs_and_labels(x, y)
    if score in DYNAMICS_SCORES or dynamics is not None:
        dynamics = _check_dynamics(dynamics, y, score)
    weighting_model = models.get("weights")
    if weighting_model is not None and getattr(weighting_model, "meta_objective", "none") == "none":
        weighting_model = None
    if score == "final_weight" and weighting_model is None:
        raise ValueError(
            "Received score='final_weight', which needs a CLIDMUModel with a trained "
            "meta-model. Received: a source without one; choose another `score`."
        )
    probabilities, weights = _probabilities_and_weights(
        models["probabilities"], weighting_model, x, y, batch_size
    )
    quality = label_quality(score, y, probabilities, weights=weights, dynamics=dynamics)
    given_probability = probabilities[np.arange(len(y)), y]
    return {
        "ranking": np.lexsort((given_probability, quality)).astype("int64"),
        "quality": quality,
        "score": score,
        "num_issues": (
            suggested_num_issues(dynamics)
            if dynamics is not None and "num_label_issues" in dynamics
            else None
        ),
        "probabilities": probabilities,
        "weights": weights,
        "held_out": held_out,
    }


def label_quality(score, y, probabilities, *, weights=None, dynamics=None):
    """One score's label quality per sample, from signals already computed.

    Args:
        score: a name of `SCORES`.
        y: the given labels, int `[N]`.
        probabilities: float `[N, C]`, the class probabilities (of the snapshot ensemble).
        weights: float `[N]`, the final meta-model's weights (for `"final_weight"`).
        dynamics: the records of `TrainingDynamicsRecorder` (for the scores of
            `DYNAMICS_SCORES`).

    Returns:
        float64 `[N]`; higher means the given label is more likely right.

    Example:

    >>> label_quality("ensemble", np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    array([0.9, 0.2])
    """
    if score == "ensemble":
        from cleanlab.rank import get_label_quality_scores

        return get_label_quality_scores(y, probabilities, method="self_confidence").astype(
            "float64"
        )
    if score == "final_weight":
        return np.asarray(weights, dtype=np.float64)
    if score == "mean_weight":
        return dynamics["weight"].astype(np.float64).mean(axis=0)
    if score == "early_loss":
        early = dynamics["given_probability"][: early_epochs(len(dynamics["epochs"]))]
        return np.log(np.maximum(early.astype(np.float64), MIN_PROBABILITY)).mean(axis=0)
    return dynamics["margin"].astype(np.float64).mean(axis=0)


def count_label_issues(y, probabilities):
    """cleanlab's confident-learning estimate of how many of the labels `y` are wrong.

    `cleanlab.count.num_label_issues` with `COUNT_ESTIMATION_METHOD`: the off-diagonal of
    the confident joint, calibrated to the label counts. It needs probabilities of a model
    that has not fitted the wrong labels (cleanlab's own recipe is cross-validation);
    `TrainingDynamicsRecorder` counts with each epoch's probabilities and
    `suggested_num_issues` keeps the early epochs'.

    Args:
        y: the given labels, int `[N]`.
        probabilities: float `[N, C]`, class probabilities.

    Returns:
        int, the estimated number of wrong labels, in `[0, N]`.

    Raises:
        ImportError: if cleanlab is not installed.

    Example:

    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> probabilities = np.array([[.9, .1], [.8, .2], [.2, .8], [.1, .9], [.3, .7], [.9, .1]])
    >>> count_label_issues(y, probabilities)
    2

    Reference:
        Northcutt et al., "Confident Learning: Estimating Uncertainty in Dataset Labels",
        JAIR 2021.
    """
    cleanlab_count = _import_cleanlab()
    return int(
        cleanlab_count.num_label_issues(
            np.asarray(y),
            np.asarray(probabilities, dtype=np.float64),
            estimation_method=COUNT_ESTIMATION_METHOD,
        )
    )


def suggested_num_issues(dynamics):
    """How many of the given labels are wrong, estimated without knowing which.

    The largest of the per-epoch counts of `count_label_issues` over the first third of the
    epochs (`early_epochs`), as `TrainingDynamicsRecorder` records them. A network trained
    on noisy labels learns the clean patterns before it memorises the wrong labels; each
    epoch's count falls short by the wrong labels memorised so far, so the largest count is
    that of the epoch that had memorised the fewest (an early one), at no extra training.

    Args:
        dynamics: the records of `TrainingDynamicsRecorder`, with `num_label_issues` (int
            `[E]`).

    Returns:
        int, the suggested number of wrong labels.

    Example:

    >>> suggested_num_issues({"num_label_issues": np.array([40, 52, 47, 30, 20, 12])})
    52

    Reference:
        Arpit et al., "A Closer Look at Memorization in Deep Networks", ICML 2017;
        Northcutt et al., JAIR 2021 (cleanlab).
    """
    counts = np.asarray(dynamics["num_label_issues"])
    return int(counts[: early_epochs(len(counts))].max())


def early_epochs(num_epochs):
    """How many of the first epochs `"early_loss"` averages and `suggested_num_issues` looks
    at: a third, at least one."""
    return max(1, num_epochs // 3)


def _probabilities_and_weights(model, weighting_model, x, y, batch_size):
    """The class probabilities of `model` (float64 `[N, C]`) and the per-sample weights of
    `weighting_model` (float32 `[N]`, or None without one), in one pass over `x`."""
    probabilities, weights = [], []
    # Imported here: the command line reads this module's names before TensorFlow loads.
    from clidmu_tf.model_inputs import labelled_input_batches

    for batch, labels in labelled_input_batches(x, y, batch_size, model):
        logits = np.asarray(model.predict_on_batch(batch), dtype=np.float64)
        if logits.shape[1] <= y.max():
            raise ValueError(
                f"The labels `y` must be class ids in [0, {logits.shape[1]}), the model's "
                f"classes. Received: labels up to {y.max()}"
            )
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities.append(shifted / shifted.sum(axis=1, keepdims=True))
        if weighting_model is not None:
            weights.append(
                weighting_model.per_sample_weights(batch, labels, batch_size=len(labels))
            )
    return np.concatenate(probabilities), np.concatenate(weights) if weights else None


def ranking_metrics(quality, flipped):
    """How well a label quality finds the wrong labels, when they are known.

    Args:
        quality: float `[N]`, higher meaning the label is more likely right.
        flipped: bool `[N]`, True where the given label is wrong.

    Returns:
        A dict with `roc_auc` (of `-quality` as a score for "wrong"; 0.5 is chance, from
        `sklearn.metrics.roc_auc_score`) and `precision_at_noise_count` (the share of wrong
        labels among the `k` lowest qualities, `k` the number of wrong labels), or None when
        all or no labels are wrong.

    Example:

    >>> ranking_metrics(np.array([0.1, 0.9, 0.2, 0.8]), np.array([True, False, False, False]))
    {'roc_auc': 1.0, 'precision_at_noise_count': 1.0}
    """
    from sklearn.metrics import roc_auc_score

    flipped = np.asarray(flipped, dtype=bool)
    count = int(flipped.sum())
    if count == 0 or count == len(flipped):
        return None
    quality = np.asarray(quality, dtype=np.float64)
    lowest = np.argsort(quality, kind="stable")[:count]
    return {
        "roc_auc": float(roc_auc_score(flipped, -quality)),
        "precision_at_noise_count": float(flipped[lowest].mean()),
    }


def _import_cleanlab():
    try:
        import cleanlab.count
    except ImportError as error:
        raise ImportError(
            "clidmu_tf.label_issues needs cleanlab, which could not be imported "
            f"({error}). Install it with `pip install cleanlab`."
        ) from error
    return cleanlab.count


def _read_run(run_dir, x, y, score, dynamics, batch_size):
    """The inputs, labels, models and dynamics of a `clidmu-tf train` run directory, and the
    held-out marks of its own samples (None when `x` is given)."""
    from clidmu_tf.cli.run_directory import RunDirectory

    run = RunDirectory(run_dir)
    if not run.is_run:
        raise FileNotFoundError(
            f"{os.fspath(run_dir)!r} is not a clidmu-tf run directory (no report.json)."
        )
    if (x is None) != (y is None):
        raise ValueError(
            "Pass both `x` and `y`, or neither to use the run's own training samples. "
            f"Received: x={'None' if x is None else 'an array'}, "
            f"y={'None' if y is None else 'an array'}"
        )
    held_out = None
    if x is None:
        from clidmu_tf.pipelines.streams import input_stream

        labels = run.training_labels()
        x = input_stream(run.load_dataset(), labels["indices"], batch_size=batch_size)
        y, held_out = labels["given"], labels["held_out"]
    models = {"probabilities": run.load_model("ensemble"), "weights": run.load_model("final")}
    recorded = run.join(RunDirectory.TRAINING_DYNAMICS)
    if dynamics is None and (score in DYNAMICS_SCORES or os.path.isfile(recorded)):
        dynamics = recorded
    return x, y, models, dynamics, held_out


def _check_inputs_and_labels(x, y):
    if x is None or y is None:
        raise ValueError(
            "With a model as `source`, pass the training inputs `x` and their labels `y`. "
            f"Received: x={'None' if x is None else 'an array'}, "
            f"y={'None' if y is None else 'an array'}"
        )
    labels = np.asarray(y)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        raise ValueError(
            "Received an invalid value for `y`, expected a non-empty 1-D array of integer "
            f"class ids. Received: y with shape {labels.shape} and dtype {labels.dtype}"
        )
    if labels.min() < 0:
        raise ValueError(f"The labels `y` must be class ids >= 0. Received: min(y)={labels.min()}")
    # Their lengths are compared as `x` is read (a dataset's length is known only then).
    from clidmu_tf.model_inputs import check_model_inputs

    return check_model_inputs(x, "x"), labels.astype("int64")


def _check_dynamics(dynamics, y, score):
    from clidmu_tf.callbacks import load_dynamics

    if dynamics is None:
        raise ValueError(
            f"Received score={score!r}, which reads the training dynamics: pass `dynamics` "
            "(the records of TrainingDynamicsRecorder). Received: dynamics=None"
        )
    if isinstance(dynamics, (str, os.PathLike)):
        dynamics = load_dynamics(dynamics)
    needed = DYNAMICS_SCORES.get(score)
    if needed is not None and (needed not in dynamics or len(dynamics["epochs"]) == 0):
        raise ValueError(
            f"Received score={score!r}, which needs the recorded {needed!r} of at least one "
            f"epoch. Received: dynamics with {sorted(dynamics)} over "
            f"{len(dynamics.get('epochs', []))} epochs"
        )
    recorded = dynamics["given_label"]
    if len(recorded) != len(y) or np.any(recorded != y):
        raise ValueError(
            "The training dynamics were recorded for other samples or labels than `x` and "
            f"`y`: pass the samples in the order they were trained on. Received: "
            f"{len(y)} labels for dynamics of {len(recorded)} samples"
        )
    return dynamics
