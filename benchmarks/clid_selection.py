"""How good is CLID at picking hyperparameters when no clean labels exist?

One keras-tuner random search (`clidmu_tf.tuning.run_search`, objective `val_clid`) on an
offline dataset with injected label noise. Every trial also logs, per epoch, its accuracy on
the noisy validation labels, on the clean validation labels and on the clean test set; the
script then asks what each selector would have returned, picking both the trial and its
best epoch the way keras-tuner does with that objective:

- `val_clid` (min): label-free, what a user without clean data can run;
- `val_accuracy` (max): accuracy against the noisy validation labels;
- `val_clean_accuracy` (max): the oracle, with clean validation labels.

It reports, over the completed trials, the Spearman rank correlation between each
selector's score and the clean test accuracy (at that selector's best epoch; CLID is
minimised, so a good CLID selector shows a negative correlation), and the clean test
accuracy of each selector's pick; the same at each trial's last epoch (the choice of
configuration alone); and the per-epoch agreement with test accuracy, pooled over all
(trial, epoch) pairs and inside each trial.

Usage:

    python benchmarks/clid_selection.py --dataset mnist_5k --noise symmetric --rate 0.4 \\
        --trials 20 --epochs 15 --seed 0 --output clid_selection.json
"""

import argparse
import json
import pathlib
import tempfile
import time

import keras_tuner
import numpy as np
from scipy import stats

from clidmu_tf.pipelines import corrupt_labels, load_dataset
from clidmu_tf.tuning import HeldOutValidation, run_search

SELECTORS = {
    "val_clid": "min",
    "val_accuracy": "max",
    "val_clean_accuracy": "max",
}


class RecordingRandomSearch(keras_tuner.RandomSearch):
    """A random search that keeps every trial's per-epoch logs (keras-tuner keeps one epoch)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.histories = {}

    def run_trial(self, trial, *args, **kwargs):
        histories = super().run_trial(trial, *args, **kwargs)
        self.histories[trial.trial_id] = histories[0].history
        return histories


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist_5k", choices=["mnist_5k", "digits"])
    parser.add_argument("--noise", default="symmetric", choices=["symmetric", "instance"])
    parser.add_argument("--rate", type=float, default=0.4)
    parser.add_argument("--backbone", default="mlp")
    parser.add_argument(
        "--width", type=float, default=None, help="fix width_multiplier (searched when unset)"
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="clid_selection.json")
    return parser.parse_args()


def noisy_splits(args):
    """Train/validation split of the noisy training set, and the clean test set."""
    data = load_dataset(args.dataset, seed=args.seed)
    x = data.inputs(split="train")
    clean = data.y_train
    features = x.reshape(len(x), -1) if args.noise == "instance" else None
    noisy, report = corrupt_labels(
        clean,
        kind=args.noise,
        rate=args.rate,
        num_classes=data.num_classes,
        seed=args.seed,
        features=features,
    )
    order = np.random.default_rng(args.seed).permutation(len(x))
    num_val = int(round(args.val_fraction * len(x)))
    val, train = order[:num_val], order[num_val:]
    splits = {
        "x_train": x[train],
        "y_train": noisy[train],
        "x_val": x[val],
        "y_val": noisy[val],
        "y_val_clean": clean[val],
        "x_test": data.inputs(split="test"),
        "y_test": data.y_test,
    }
    return splits, data.num_classes, report


def selection(histories, metric, direction, last_epoch=False):
    """What selecting by `metric` returns, and how well `metric` ranks the trials.

    Each trial is scored at its best epoch by `metric` (keras-tuner's checkpoint), or at
    its last epoch with `last_epoch=True`, which isolates the choice of configuration from
    the choice of epoch.
    """
    best = np.argmin if direction == "min" else np.argmax
    rows = []
    for trial_id, history in sorted(histories.items()):
        values = np.asarray(history[metric])
        epoch = len(values) - 1 if last_epoch else int(best(values))
        rows.append(
            {
                "trial_id": trial_id,
                "epoch": epoch + 1,
                "score": float(values[epoch]),
                "test_accuracy": float(history["test_accuracy"][epoch]),
            }
        )
    scores = np.array([row["score"] for row in rows])
    test = np.array([row["test_accuracy"] for row in rows])
    chosen = rows[int(best(scores))]
    return {
        "spearman_with_test_accuracy": _spearman(scores, test),
        "chosen_trial": chosen["trial_id"],
        "chosen_epoch": chosen["epoch"],
        "chosen_test_accuracy": chosen["test_accuracy"],
        "per_trial": rows,
    }


def per_epoch_agreement(histories, metric):
    """Spearman's rho of `metric` and test accuracy over every (trial, epoch) pair, and the
    median over trials of rho between epochs of one trial (the paper's per-epoch claim)."""
    pooled = [
        (value, accuracy)
        for history in histories.values()
        for value, accuracy in zip(history[metric], history["test_accuracy"])
    ]
    within_trial = [
        _spearman(history[metric], history["test_accuracy"]) for history in histories.values()
    ]
    within_trial = [rho for rho in within_trial if rho is not None]
    return {
        "pooled_spearman": _spearman(*zip(*pooled)),
        "median_within_trial_spearman": (
            float(np.median(within_trial)) if within_trial else None
        ),
    }


def _spearman(a, b):
    """Spearman's rho, or None where it is undefined (a constant input)."""
    rho = stats.spearmanr(a, b).statistic
    return None if np.isnan(rho) else float(rho)


def main():
    args = parse_args()
    splits, num_classes, report = noisy_splits(args)
    hyperparameters = keras_tuner.HyperParameters()
    if args.width is not None:
        hyperparameters.Fixed("width_multiplier", args.width)
    start = time.time()
    with tempfile.TemporaryDirectory() as directory:
        tuner, summary = run_search(
            splits["x_train"],
            splits["y_train"],
            splits["x_val"],
            splits["y_val"],
            y_val_clean=splits["y_val_clean"],
            num_classes=num_classes,
            objective="val_clid",
            tuner=RecordingRandomSearch,
            max_trials=args.trials,
            epochs=args.epochs,
            backbone=args.backbone,
            hyperparameters=hyperparameters,
            directory=directory,
            project_name="clid_selection",
            overwrite=True,
            seed=args.seed,
            callbacks=[HeldOutValidation(splits["x_test"], splits["y_test"], prefix="test_")],
        )
    seconds = time.time() - start
    completed = {
        trial["trial_id"] for trial in summary["trials"] if trial["status"] == "COMPLETED"
    }
    histories = {
        trial_id: history
        for trial_id, history in tuner.histories.items()
        if trial_id in completed
    }
    results = {
        "command_arguments": vars(args),
        "num_train": len(splits["x_train"]),
        "num_val": len(splits["x_val"]),
        "num_test": len(splits["x_test"]),
        "realised_noise_rate": float(report.flip_rate),
        "trials": len(summary["trials"]),
        "completed_trials": len(histories),
        "search_seconds": round(seconds, 1),
        # References: the best test accuracy any trial reached at any epoch (a selector
        # that could read the test set), and the mean over trials at their last epoch
        # (picking a trial at random, without early stopping).
        "test_oracle_accuracy": max(max(h["test_accuracy"]) for h in histories.values()),
        "random_pick_accuracy": float(
            np.mean([h["test_accuracy"][-1] for h in histories.values()])
        ),
        "selectors": {
            metric: selection(histories, metric, direction)
            for metric, direction in SELECTORS.items()
        },
        "selectors_at_last_epoch": {
            metric: selection(histories, metric, direction, last_epoch=True)
            for metric, direction in SELECTORS.items()
        },
        "per_epoch_spearman": {
            metric: per_epoch_agreement(histories, metric) for metric in SELECTORS
        },
        "search_summary": summary,
        "histories": histories,
    }
    tuner_best = summary["best"]["trial_id"]
    assert results["selectors"]["val_clid"]["chosen_trial"] == tuner_best, (
        "the val_clid selection here must be the tuner's own choice"
    )

    print(
        f"{args.dataset}, {args.noise} noise {args.rate} (realised "
        f"{results['realised_noise_rate']:.3f}), {len(histories)}/{len(summary['trials'])} "
        f"trials completed, {args.epochs} epochs each, {seconds:.0f} s"
    )
    for key, title in (("selectors", "best epoch"), ("selectors_at_last_epoch", "last epoch")):
        header = f"selector ({title})"
        print(f"{header:<28}{'Spearman vs test acc':>22}{'test acc of pick':>18}")
        for metric, result in results[key].items():
            print(
                f"{metric:<28}{_format(result['spearman_with_test_accuracy']):>22}"
                f"{result['chosen_test_accuracy']:>18.4f}"
            )
    print(f"{'per-epoch Spearman':<28}{'all (trial, epoch)':>22}{'median in trial':>18}")
    for metric, result in results["per_epoch_spearman"].items():
        print(
            f"{metric:<28}{_format(result['pooled_spearman']):>22}"
            f"{_format(result['median_within_trial_spearman']):>18}"
        )
    print(
        f"references: best test accuracy of any trial and epoch "
        f"{results['test_oracle_accuracy']:.4f}; mean last-epoch test accuracy "
        f"{results['random_pick_accuracy']:.4f}"
    )
    pathlib.Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.output}")


def _format(rho):
    return "undefined" if rho is None else f"{rho:.3f}"


if __name__ == "__main__":
    main()
