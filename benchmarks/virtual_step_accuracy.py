"""Test accuracy of CLID-MU with the full and the head-only virtual step, over seeds.

Each run is the default `clidmu-tf train` job (`TrainingJob`, CLID-MU with Meta-Weight-Net,
the dataset's default backbone and schedule) without baseline and export, once with
`virtual_step="full"` (the paper's) and once with `"head"`, on the same noisy labels and
initial weights (same seed). It reports, per dataset and noise, the mean ± standard
deviation over seeds of the final model's and the CLID snapshot ensemble's clean test
accuracy, with the number of epochs each ran. Results are written to `--output` after every
run, and runs already there are skipped, so an interrupted benchmark resumes. Runs recorded
without `weight_normalization` were made before the option existed, with "batch".

    python benchmarks/virtual_step_accuracy.py --datasets digits mnist_5k \\
        --noises instance:0.4 symmetric:0.6 --seeds 0 1 2 --output virtual_step.json
"""

import argparse
import json
import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from clidmu_tf.cli.training_job import DEFAULTS, TrainingJob  # noqa: E402
from clidmu_tf.models.clidmu_model import DEFAULT_WEIGHT_NORMALIZATION  # noqa: E402

VIRTUAL_STEPS = ("full", "head")


def run_one(dataset, noise, seed, virtual_step, epochs, weight_normalization):
    config = {
        "weight_normalization": weight_normalization,
        "epochs": epochs,
        "dataset": dataset,
        "noise": noise,
        "seed": seed,
        "virtual_step": virtual_step,
        "baseline": "none",
        "export_formats": [],
    }
    with tempfile.TemporaryDirectory() as directory:
        job = TrainingJob(config, pathlib.Path(directory) / "run", verbose=0)
        status = job.run()
        report = job.report.data
    if status != "completed":
        raise RuntimeError(f"run {config} ended with status {status!r}")
    return {
        "test_accuracy": report["test_accuracy"],
        "ensemble_test_accuracy": report["ensemble_test_accuracy"],
    }


def summary(results):
    lines = [
        f"{'dataset':<10} {'noise':<14} {'epochs':>6} {'step':<5} {'weights':<7} {'final accuracy':>16} "
        f"{'ensemble accuracy':>18} seeds"
    ]
    groups = {}
    for result in results:
        key = (result["dataset"], result["noise"], result["epochs"], result["virtual_step"],
               result.get("weight_normalization", "batch"))  # fmt: skip
        groups.setdefault(key, []).append(result)
    for (dataset, noise, epochs, step, weights), runs in sorted(groups.items()):
        final = 100 * np.array([run["test_accuracy"] for run in runs])
        ensemble = 100 * np.array([run["ensemble_test_accuracy"] for run in runs])
        # Sample standard deviation over the seeds, as elsewhere in BENCHMARKS.md.
        ddof = 1 if len(runs) > 1 else 0
        lines.append(
            f"{dataset:<10} {noise:<14} {epochs:>6} {step:<5} {weights:<7} {final.mean():>9.2f} ± "
            f"{final.std(ddof=ddof):.2f} {ensemble.mean():>11.2f} ± "
            f"{ensemble.std(ddof=ddof):.2f} {len(runs)}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits"])
    parser.add_argument("--noises", nargs="+", default=["instance:0.4", "symmetric:0.6"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                        help="default: the train command's")
    parser.add_argument("--weight-normalization", choices=["batch", "class"],
                        default=DEFAULT_WEIGHT_NORMALIZATION, help="default: the library's")
    parser.add_argument("--output", required=True, help="JSON file of the results")
    args = parser.parse_args()
    weights = args.weight_normalization

    output = pathlib.Path(args.output)
    results = json.loads(output.read_text()) if output.exists() else []
    done = {
        (r["dataset"], r["noise"], r["seed"], r["epochs"], r["virtual_step"],
         r.get("weight_normalization", "batch"))
        for r in results
    }  # fmt: skip
    for dataset in args.datasets:
        for noise in args.noises:
            for seed in args.seeds:
                for step in VIRTUAL_STEPS:
                    if (dataset, noise, seed, args.epochs, step, weights) in done:
                        continue
                    accuracies = run_one(dataset, noise, seed, step, args.epochs, weights)
                    results.append(
                        {"dataset": dataset, "noise": noise, "seed": seed,
                         "epochs": args.epochs, "virtual_step": step,
                         "weight_normalization": weights, **accuracies}
                    )  # fmt: skip
                    output.write_text(json.dumps(results, indent=2))
                    print(f"{dataset} {noise} seed {seed} {step}: {accuracies}", flush=True)
    print(summary(results))


if __name__ == "__main__":
    main()
