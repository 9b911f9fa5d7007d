"""Finding wrong labels: rankings from what CLID-MU training recorded, against cleanlab.

For each dataset, noise kind and seed, the script trains CLID-MU once the way `clidmu-tf
train` does (its `TrainingJob` with the defaults, without the baseline and the export,
which the rankings do not use) and ranks the training samples by each score of
`clidmu_tf.label_issue_ranking.SCORES`, all read from that one training:

- `final_weight`: the final meta-model's weight (what `inspect` ranked by before);
- `ensemble`: cleanlab's self-confidence quality on the CLID snapshot ensemble's
  in-sample probabilities;
- `mean_weight`, `early_loss`, `margin`: the meta-model's weight averaged over the epochs,
  the given label's loss over the first third of the epochs, the area under the margin.

It compares them with cleanlab's recommended use: out-of-sample probabilities from 5-fold
cross-validation (`sklearn.model_selection.cross_val_predict`) of a logistic regression on
the flattened inputs, scored by `cleanlab.rank.get_label_quality_scores`; the cost of those
5 fits is timed. Every ranking is scored against the injected flips with the ROC AUC
(`sklearn.metrics.roc_auc_score`) and the precision among the k lowest, k the true number of
flips. The label-free estimates of that number are recorded as `count_estimates`: cleanlab's
confident-learning counts (`cleanlab.count.num_label_issues`, `off_diagonal` and
`off_diagonal_calibrated`) and the `argmax` count, on the class probabilities of the early
epochs (the largest per-epoch count, the product's suggestion, and the mean of the first k
epochs; the runs keep each of the first third's epochs' probabilities for this), of the
snapshot ensemble and of the cross-validated logistic regression. `--recount` recomputes the
early estimates of finished cells from their kept runs.

Each cell's result is appended to `--output` (JSON lines) as soon as it is done, and the
run directories are kept under `--work-dir`, so a restarted run skips finished cells and
finished trainings. Timings are wall-clock seconds on whatever machine runs it.

Usage (what BENCHMARKS.md reports; digits first, then mnist_5k):

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10 \\
        python benchmarks/label_errors.py --datasets digits mnist_5k \\
        --output label_errors.jsonl --work-dir runs/label_errors

    python benchmarks/label_errors.py --summary --output label_errors.jsonl

`--quick` runs one tiny cell (digits, 100 samples, an MLP, 1 epoch) as a smoke test.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

NOISE_KINDS = ("symmetric", "instance", "asymmetric")
DATASETS = ("digits", "mnist_5k")
CROSS_VALIDATION_FOLDS = 5
# Where the benchmark's runs keep each early epoch's class probabilities (see `train`).
EARLY_EPOCHS_FILE = "early_epoch_probabilities.npz"
# The windows (first k epochs) whose mean class probabilities the count estimates compare.
COUNT_WINDOWS = (1, 2, 3, 4, 5, 7, 10)
# What the quick smoke run trains: enough for every score to exist, no more.
QUICK_CONFIG = {"limit_train": 100, "epochs": 1, "top_k": 1, "backbone": "mlp"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["digits"], choices=DATASETS)
    parser.add_argument("--noise", nargs="+", default=list(NOISE_KINDS), choices=NOISE_KINDS)
    parser.add_argument("--rate", type=float, default=0.4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default="label_errors.jsonl",
                        help="JSON lines, one per cell, appended as cells finish.")
    parser.add_argument("--work-dir", default="runs/label_errors",
                        help="where the cells' run directories are kept (for resuming).")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: one tiny digits cell, 1 epoch.")
    parser.add_argument("--recount", action="store_true",
                        help="only recompute, in --output, the count estimates from the early "
                        "epochs' probabilities kept in the cells' runs under --work-dir (no "
                        "training, no cross-validation).")
    parser.add_argument("--summary", action="store_true",
                        help="only print the table of --output (mean ± std over seeds).")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.noise, args.seeds = ["digits"], ["symmetric"], [0]
    return args


def cells(args):
    return [
        (dataset, kind, seed)
        for dataset in args.datasets
        for seed in args.seeds
        for kind in args.noise
    ]


def cell_key(dataset, kind, rate, seed, quick):
    return f"{dataset}-{kind}-{rate}-seed{seed}" + ("-quick" if quick else "")


def finished_keys(path):
    if not os.path.isfile(path):
        return set()
    with open(path, encoding="utf-8") as handle:
        return {json.loads(line)["cell"] for line in handle if line.strip()}


def train(run_dir, dataset, kind, rate, seed, quick):
    """Trains the cell's CLID-MU run, unless a completed one is already in `run_dir`."""
    from clidmu_tf.cli.run_report import RunReport
    from clidmu_tf.cli.training_job import TrainingJob

    report_path = os.path.join(run_dir, RunReport.FINAL_NAME)
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as handle:
            if json.load(handle)["status"] == "completed":
                return False
    config = {
        "dataset": dataset,
        "noise": f"{kind}:{rate}",
        "seed": seed,
        "baseline": "none",
        "export_formats": [],
        # digits has no class map of its own; its classes are the digits, so MNIST's applies.
        "class_map": "mnist" if kind == "asymmetric" else None,
        **(QUICK_CONFIG if quick else {}),
    }
    from unittest import mock

    # The run's recorder also keeps each early epoch's class probabilities (the product keeps
    # only their mean), so that the windows of the count estimate can be compared.
    with mock.patch("clidmu_tf.callbacks.TrainingDynamicsRecorder", each_early_epoch_recorder()):
        TrainingJob(config, run_dir, overwrite=True, verbose=0).run()
    return True


def each_early_epoch_recorder():
    """`TrainingDynamicsRecorder` that also writes the class probabilities of each epoch of
    the first third, float32 `[E, N, C]`, to `EARLY_EPOCHS_FILE` beside its records."""
    from clidmu_tf.callbacks import TrainingDynamicsRecorder
    from clidmu_tf.callbacks.training_dynamics_recorder import save_dynamics
    from clidmu_tf.label_issue_ranking import early_epochs

    def class_probabilities(model, x, batch_size):
        """The softmax of the model's logits over `x` (an array or a dataset of batches)."""
        import tensorflow as tf

        options = {} if isinstance(x, tf.data.Dataset) else {"batch_size": batch_size}
        logits = np.asarray(model.predict(x, verbose=0, **options), dtype=np.float64)
        if isinstance(logits, dict):
            logits = logits["logits"]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    class EachEarlyEpochRecorder(TrainingDynamicsRecorder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.each_epoch = {}

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch + 1 <= early_epochs(self.params["epochs"]) and self.path is not None:
                self.each_epoch[epoch + 1] = class_probabilities(
                    self.model, self.x, self.batch_size
                ).astype("float32")
                epochs = sorted(self.each_epoch)
                save_dynamics(
                    os.path.join(os.path.dirname(self.path), EARLY_EPOCHS_FILE),
                    {
                        "epochs": np.asarray(epochs, dtype="int32"),
                        "probabilities": np.stack([self.each_epoch[e] for e in epochs]),
                    },
                )

    return EachEarlyEpochRecorder


def cross_validated_probabilities(x, given, seed):
    """5-fold cross-validated probabilities of a logistic regression, and their cost in s."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    flat = x.reshape(len(x), -1)
    start = time.perf_counter()
    probabilities = cross_val_predict(
        LogisticRegression(max_iter=1000),
        flat,
        given,
        cv=StratifiedKFold(CROSS_VALIDATION_FOLDS, shuffle=True, random_state=seed),
        method="predict_proba",
    )
    return probabilities, time.perf_counter() - start


# Estimates of how many labels are wrong, each from one set of class probabilities: cleanlab's
# confident-learning count (`cleanlab.count.num_label_issues`) with either of its estimation
# methods, and, as a plain reference, the samples whose most probable class is not the label.
CLEANLAB_COUNT_METHODS = ("off_diagonal", "off_diagonal_calibrated")
COUNT_METHODS = (*CLEANLAB_COUNT_METHODS, "argmax")


def suggested_counts(given, probabilities):
    """The label-free estimates of the number of wrong labels, one per `COUNT_METHODS`."""
    from cleanlab.count import num_label_issues

    counts = {
        method: int(num_label_issues(given, probabilities, estimation_method=method))
        for method in CLEANLAB_COUNT_METHODS
    }
    counts["argmax"] = int(np.sum(probabilities.argmax(axis=1) != given))
    return counts


def early_counts(path, given):
    """The count estimates from the early epochs' class probabilities recorded in `path`:
    `early_epochs_max`, the largest of the per-epoch counts over the first third (the
    product's rule, `suggested_num_issues`, with each method), and `first_k_epochs`, the
    count on the mean probabilities of the first k epochs, for each k of `COUNT_WINDOWS`.
    None when the run did not keep them."""
    if not os.path.isfile(path):
        return {}
    with np.load(path) as arrays:
        probabilities = arrays["probabilities"].astype(np.float64)
    per_epoch = [suggested_counts(given, epoch) for epoch in probabilities]
    return {
        "early_epochs_max": {
            method: max(counts[method] for counts in per_epoch) for method in COUNT_METHODS
        },
        **{
            f"first_{k}_epochs": suggested_counts(given, probabilities[:k].mean(axis=0))
            for k in COUNT_WINDOWS
            if k <= len(probabilities)
        },
    }


def evaluate_cell(run_dir, seed):
    """Every ranking of one trained cell, scored against the known flips."""
    from cleanlab.rank import get_label_quality_scores

    from clidmu_tf.callbacks import load_dynamics
    from clidmu_tf.cli.run_directory import RunDirectory
    from clidmu_tf.label_issue_ranking import SCORES, label_issues, label_quality, ranking_metrics

    run = RunDirectory(run_dir)
    labels = run.training_labels()
    given, flipped = labels["given"], labels["given"] != labels["true"]
    x = run.load_dataset().inputs(labels["indices"])
    issues = label_issues(run_dir, x, given)
    dynamics = load_dynamics(run.join(RunDirectory.TRAINING_DYNAMICS))
    rankings = {}
    for score in SCORES:
        quality = label_quality(
            score, given, issues["probabilities"], weights=issues["weights"], dynamics=dynamics
        )
        rankings[score] = ranking_metrics(quality, flipped)
    cv_probabilities, cv_seconds = cross_validated_probabilities(x, given, seed)
    rankings["cleanlab_cv_logistic"] = ranking_metrics(
        get_label_quality_scores(given, cv_probabilities), flipped
    )
    report = run.report()
    return {
        "num_train": int(len(given)),
        "num_flipped": int(flipped.sum()),
        # The product's suggestion (what `label_issues` returns as `num_issues`), then every
        # estimate on each set of probabilities: the early epochs' (kept by the benchmark's
        # recorder), the snapshot ensemble's, the cross-validated logistic's.
        "suggested_num_issues": issues["num_issues"],
        "count_estimates": {
            **early_counts(run.join(EARLY_EPOCHS_FILE), given),
            "ensemble": suggested_counts(given, issues["probabilities"]),
            "cleanlab_cv_logistic": suggested_counts(given, cv_probabilities),
        },
        "rankings": rankings,
        "seconds": {
            "clidmu_training": report["timings"].get("train_method"),
            "cleanlab_cv_logistic": round(cv_seconds, 2),
        },
        "ensemble_test_accuracy": report.get("ensemble_test_accuracy"),
        "epochs": report["config"]["epochs"],
    }


def recount(path, work_dir):
    """Recomputes the early epochs' count estimates of the cells of `path` whose runs kept
    their early probabilities, and the product's suggestion from them; returns how many."""
    from clidmu_tf.atomic_files import write_bytes_atomically
    from clidmu_tf.cli.run_directory import RunDirectory
    from clidmu_tf.label_issue_ranking import COUNT_ESTIMATION_METHOD

    with open(path, encoding="utf-8") as handle:
        results = [json.loads(line) for line in handle if line.strip()]
    recounted = 0
    for result in results:
        run = RunDirectory(os.path.join(work_dir, result["cell"]))
        if not os.path.isfile(run.join(EARLY_EPOCHS_FILE)):
            continue
        counts = early_counts(run.join(EARLY_EPOCHS_FILE), run.training_labels()["given"])
        kept = {
            source: estimates
            for source, estimates in _count_estimates(result).items()
            if source in ("ensemble", "cleanlab_cv_logistic")
        }
        result["count_estimates"] = {**counts, **kept}
        # What `label_issues` suggests (`suggested_num_issues`) for these probabilities.
        result["suggested_num_issues"] = counts["early_epochs_max"][COUNT_ESTIMATION_METHOD]
        recounted += 1
    text = "".join(json.dumps(result) + "\n" for result in results)
    write_bytes_atomically(path, text.encode("utf-8"))
    return recounted


def summarise(path):
    """The table of mean ± std over seeds, per dataset, noise and ranking."""
    from clidmu_tf.label_issue_ranking import SCORES

    rows = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                result = json.loads(line)
                rows.setdefault((result["dataset"], result["noise"]), []).append(result)
    lines = [
        "| dataset | noise | seeds | ranking | ROC AUC | precision at k | training s |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = dict(sorted(rows.items()))
    for (dataset, noise), results in rows.items():
        for name in [*SCORES, "cleanlab_cv_logistic"]:
            auc = [r["rankings"][name]["roc_auc"] for r in results]
            precision = [r["rankings"][name]["precision_at_noise_count"] for r in results]
            seconds = [
                r["seconds"]["cleanlab_cv_logistic" if name.startswith("cleanlab") else
                             "clidmu_training"]
                for r in results
            ]
            lines.append(
                f"| {dataset} | {noise} | {len(results)} | {name} | {_mean_std(auc, 3)} | "
                f"{_mean_std(precision, 3)} | {_mean_std(seconds, 0)} |"
            )
    lines += ["", *count_table(rows)]
    return "\n".join(lines)


def count_table(rows):
    """The estimates of how many labels are wrong against the number flipped, mean ± std over
    the seeds that recorded each (cells scored before `count_estimates` existed recorded
    only cleanlab's `off_diagonal` count on the ensemble and the cross-validated logistic)."""
    lines = [
        "| dataset | noise | probabilities / estimate | seeds | flipped | suggested | "
        "suggested / flipped |",
        "|---|---|---|---|---|---|---|",
    ]
    for (dataset, noise), results in rows.items():
        estimates = {}
        for result in results:
            for source, counts in _count_estimates(result).items():
                for method, count in counts.items():
                    estimates.setdefault((source, method), []).append(
                        (count, result["num_flipped"])
                    )
        for (source, method), pairs in estimates.items():
            counts, flipped = np.array(pairs, dtype=float).T
            lines.append(
                f"| {dataset} | {noise} | {source} / {method} | {len(pairs)} | "
                f"{_mean_std(flipped, 0)} | {_mean_std(counts, 0)} | "
                f"{_mean_std(counts / flipped, 2)} |"
            )
    return lines


def _count_estimates(result):
    if "count_estimates" in result:
        from clidmu_tf.label_issue_ranking import early_epochs

        estimates = dict(result["count_estimates"])
        # Cells scored while the recorder kept the mean of the first third's probabilities.
        if "early" in estimates:
            estimates[f"first_{early_epochs(result['epochs'])}_epochs"] = estimates.pop("early")
        return estimates
    suggested = result["suggested_num_issues"]
    return {source: {"off_diagonal": count} for source, count in suggested.items()}


def _mean_std(values, digits):
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        print(summarise(args.output))
        return 0
    if args.recount:
        print(f"Recounted {recount(args.output, args.work_dir)} cells of {args.output}.")
        return 0
    todo = cells(args)
    done = finished_keys(args.output)
    for number, (dataset, kind, seed) in enumerate(todo, start=1):
        key = cell_key(dataset, kind, args.rate, seed, args.quick)
        if key in done:
            print(f"[{number}/{len(todo)}] {key}: already in {args.output}", flush=True)
            continue
        start = time.perf_counter()
        run_dir = os.path.join(args.work_dir, key)
        trained = train(run_dir, dataset, kind, args.rate, seed, args.quick)
        result = {
            "cell": key,
            "dataset": dataset,
            "noise": f"{kind}:{args.rate}",
            "seed": seed,
            **evaluate_cell(run_dir, seed),
        }
        with open(args.output, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
        aucs = ", ".join(
            f"{name} {scores['roc_auc']:.3f}" for name, scores in result["rankings"].items()
        )
        action = "trained and scored" if trained else "scored (run reused)"
        print(
            f"[{number}/{len(todo)}] {key}: {action} in {time.perf_counter() - start:.0f} s; "
            f"ROC AUC {aucs}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
