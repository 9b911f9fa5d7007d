"""The CSV of training samples ranked by how likely their label is wrong (`label_errors.csv`,
`clidmu-tf inspect`)."""

import csv

import numpy as np

BASE_COLUMNS = (
    "rank", "index", "weight", "given_label", "predicted_label", "confidence", "label_quality",
)  # fmt: skip


def rank_label_errors(
    issues, given, *, indices=None, true=None, class_names=None, top=None, held_out=None,
    files=None,
):
    """The training samples in the order of `clidmu_tf.label_issues`, most suspicious first.

    Args:
        issues: the dict returned by `clidmu_tf.label_issues` (its `ranking`, `quality`,
            `probabilities` and `weights`).
        given: the labels trained with, `[N]`.
        indices: the samples' positions in the dataset's training split, written to the
            `index` column; `range(N)` by default.
        true: the true labels `[N]` when they are known (injected noise), or None.
        class_names: the class names, or None to write class ids only.
        top: how many rows to return; all when None.
        held_out: bool `[N]`, True for the samples of the held-out selection set
            (`train --snapshot-selection held-out`), or None when unknown.
        files: str `[N]`, each sample's image file relative to its folder (an image folder
            dataset), or None.

    Returns:
        A list of dicts with the keys `rank`, `index`, `weight` (the final meta-model's
        weight, None without one), `given_label`, `predicted_label`, `confidence` (the
        predicted class's probability), `label_quality` (the ranking's score, lower meaning
        more likely wrong), then `given_name` and `predicted_name` with class names,
        `true_label` and `label_is_wrong` when `true` is given, and `held_out` (1 for a
        sample of the held-out selection set, never trained on, else 0) when `held_out` is
        given, and `file` when `files` is given.

    Example:

    >>> issues = {"ranking": np.array([1, 0]), "quality": np.array([0.8, 0.3]),
    ...           "probabilities": np.array([[0.8, 0.2], [0.7, 0.3]]), "weights": None}
    >>> rows = rank_label_errors(issues, np.array([0, 1]))
    >>> [(row["index"], row["given_label"], row["predicted_label"]) for row in rows]
    [(1, 1, 0), (0, 0, 0)]
    """
    given = np.asarray(given).reshape(-1)
    probabilities = issues["probabilities"]
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    indices = np.arange(len(given)) if indices is None else np.asarray(indices)
    weights = issues["weights"]
    order = issues["ranking"] if top is None else issues["ranking"][:top]
    rows = []
    for rank, position in enumerate(order, start=1):
        row = {
            "rank": rank,
            "index": int(indices[position]),
            "weight": None if weights is None else float(weights[position]),
            "given_label": int(given[position]),
            "predicted_label": int(predicted[position]),
            "confidence": float(confidence[position]),
            "label_quality": float(issues["quality"][position]),
        }
        if class_names is not None:
            row["given_name"] = class_names[given[position]]
            row["predicted_name"] = class_names[predicted[position]]
        if true is not None:
            row["true_label"] = int(true[position])
            row["label_is_wrong"] = bool(true[position] != given[position])
        if held_out is not None:
            row["held_out"] = int(held_out[position])
        if files is not None:
            row["file"] = str(files[position])
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
            {
                **row,
                "weight": "" if row["weight"] is None else f"{row['weight']:.6g}",
                "confidence": f"{row['confidence']:.4f}",
                "label_quality": f"{row['label_quality']:.6g}",
            }
        )
