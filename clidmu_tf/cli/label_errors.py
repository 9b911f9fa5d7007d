"""Ranking training samples by how little the meta-model trusts their labels."""

import csv

import numpy as np

BASE_COLUMNS = ("rank", "index", "weight", "given_label", "predicted_label", "confidence")


def score_samples(model, x, given, batch_size=256):
    """The meta-model's trust in each sample's label, and the model's class probabilities.

    Args:
        model: a trained `CLIDMUModel`.
        x: inputs, an array `[N, ...]`.
        given: the labels trained with, `[N]`.
        batch_size: batch size of the passes over `x`.

    Returns:
        A tuple `(weights, probabilities)`: `model.per_sample_weights(x, given)` (`[N]`,
        Meta-Weight-Net's weight of the sample's loss or the VRI rectifier's value at its
        label) and the softmax of the model's logits (`[N, C]`, float64).
    """
    given = np.asarray(given).reshape(-1)
    weights = model.per_sample_weights(x, given, batch_size=batch_size)
    logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights, shifted / shifted.sum(axis=1, keepdims=True)


def rank_label_errors(
    weights, probabilities, given, *, indices=None, true=None, class_names=None, top=None
):
    """The samples the meta-model trusts least, most suspicious first.

    Samples are ordered by weight; ties go first to the sample whose given label the model
    finds least likely.

    Args:
        weights: `[N]`, the per-sample weights of `score_samples`.
        probabilities: `[N, C]`, the class probabilities of `score_samples`.
        given: the labels trained with, `[N]`.
        indices: the samples' positions in the dataset's training split, written to the
            `index` column; `range(N)` by default.
        true: the true labels `[N]` when they are known (injected noise), or None.
        class_names: the class names, or None to write class ids only.
        top: how many rows to return; all when None.

    Returns:
        A list of dicts with the keys `rank`, `index`, `weight`, `given_label`,
        `predicted_label`, `confidence` (the predicted class's probability), then
        `given_name` and `predicted_name` with class names, and `true_label` and
        `label_is_wrong` when `true` is given.

    Example:

    >>> rows = rank_label_errors(
    ...     np.array([0.9, 0.1]), np.array([[0.8, 0.2], [0.7, 0.3]]), np.array([0, 1]))
    >>> [(row["index"], row["given_label"], row["predicted_label"]) for row in rows]
    [(1, 1, 0), (0, 0, 0)]
    """
    given = np.asarray(given).reshape(-1)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    given_probability = probabilities[np.arange(len(given)), given]
    indices = np.arange(len(given)) if indices is None else np.asarray(indices)
    order = np.lexsort((given_probability, weights))
    if top is not None:
        order = order[:top]
    rows = []
    for rank, position in enumerate(order, start=1):
        row = {
            "rank": rank,
            "index": int(indices[position]),
            "weight": float(weights[position]),
            "given_label": int(given[position]),
            "predicted_label": int(predicted[position]),
            "confidence": float(confidence[position]),
        }
        if class_names is not None:
            row["given_name"] = class_names[given[position]]
            row["predicted_name"] = class_names[predicted[position]]
        if true is not None:
            row["true_label"] = int(true[position])
            row["label_is_wrong"] = bool(true[position] != given[position])
        rows.append(row)
    return rows


def write_label_errors_csv(destination, rows):
    """Writes the rows of `rank_label_errors` as CSV with a header line.

    Args:
        destination: a path, or an open text stream such as `sys.stdout`.
        rows: the rows of `rank_label_errors`.
    """
    columns = list(rows[0]) if rows else list(BASE_COLUMNS)
    if hasattr(destination, "write"):
        _write_rows(destination, columns, rows)
        return
    with open(destination, "w", newline="", encoding="utf-8") as handle:
        _write_rows(handle, columns, rows)


def _write_rows(handle, columns, rows):
    writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {**row, "weight": f"{row['weight']:.6g}", "confidence": f"{row['confidence']:.4f}"}
        )


def detection_scores(weights, flipped):
    """How well low weights find the flipped labels, when the flips are known.

    Args:
        weights: `[N]` per-sample weights.
        flipped: bool `[N]`, True where the given label is wrong.

    Returns:
        A dict with `roc_auc` (of `-weight` as a score for "flipped"; 0.5 is chance) and
        `precision_at_noise_count` (the share of flipped samples among the `k` lowest
        weights, `k` the number of flipped samples), or None when all or no labels are
        flipped.
    """
    flipped = np.asarray(flipped, dtype=bool)
    count = int(flipped.sum())
    if count == 0 or count == len(flipped):
        return None
    from sklearn.metrics import roc_auc_score

    lowest = np.argsort(weights, kind="stable")[:count]
    return {
        "roc_auc": float(roc_auc_score(flipped, -np.asarray(weights, dtype=np.float64))),
        "precision_at_noise_count": float(flipped[lowest].mean()),
    }
