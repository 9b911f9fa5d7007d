"""Accuracy grid: CLID-MU against plain training and the meta-objective baselines.

Every run is one `clidmu-tf train` job (`clidmu_tf.cli.training_job.TrainingJob`, the code
path of the command line) with `--baseline none` and no export, on an offline dataset with
injected label noise. Per run it records, per epoch, the clean test accuracy and the CLID
of the meta set (the label-free score the snapshot ensemble ranks epochs by), and then:

- `last`: the last epoch's test accuracy;
- `ensemble`: the CLID snapshot ensemble the job selected (the product's answer);
- `lowest_clid`: the single epoch with the lowest meta-set CLID;
- `best`: the best epoch by test accuracy, an ORACLE (it reads test labels) that only
  measures how much a selection left on the table;
- `spearman`: Spearman's rho between per-epoch meta-set CLID and test accuracy (the paper
  claims it is negative); the meta set's CLID is scored here after every epoch whatever the
  job ranks its snapshots by (`--snapshot-selection`: the meta set, the paper's rule and
  the job's default, or a held-out selection set), and the job's own per-epoch CLID is
  kept as `selection_clid`;
- `rules`: other label-free selection rules scored from the same per-epoch test logits
  (the job's own rule recomputed, the paper's rule, the ensemble of the last five epochs,
  of the five lowest meta-set-CLID epochs of the second half, of the five epochs with the
  lowest CLID on the test inputs, unlabeled inputs never trained on,
  and, with a cyclic schedule, of the five lowest-CLID cycle ends).

Each finished run is appended to the results file at once (one JSON line, one write), and
a restarted grid skips the runs the file already holds, so the grid can be stopped and
resumed at any time. `--summary` groups the runs into cells and prints the markdown table
of BENCHMARKS.md (accuracies in %, mean +- sample standard deviation over seeds).

Usage:

    python benchmarks/accuracy.py --datasets digits --epochs 20 \\
        --results benchmarks/results/accuracy.jsonl
    python benchmarks/accuracy.py --summary --results benchmarks/results/accuracy.jsonl
    python benchmarks/accuracy.py --quick --results /tmp/quick.jsonl   # smoke run

The semi-supervised rows (the paper's setting: a fraction of the training set labelled):

    python benchmarks/accuracy.py --datasets digits mnist_5k --noises symmetric:0.4 \
        --backbones small_cnn --methods ce clid-wnet --labeled-fraction 0.1 \
        --results benchmarks/results/semi_supervised.jsonl
"""

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

import numpy as np

DATASETS = ("digits", "mnist_5k")
NOISES = ("symmetric:0.4", "symmetric:0.6", "instance:0.4", "asymmetric:0.4")
BACKBONES = ("mlp", "small_cnn")
CORE_METHODS = ("ce", "wnet-clean-meta", "clid-wnet")
# Run on the small_cnn cells of the first dataset only (issue 9: one dataset suffices).
EXTRA_METHODS = ("clid-vri", "wnet-noisy-meta", "wnet-mae-meta")
SEEDS = (0, 1, 2)
ENSEMBLE_SIZE = 5
CYCLE_EPOCHS = 5
# Digit datasets take the MNIST asymmetric map (7->1, 2->7, 5<->6, 3->8).
DIGIT_CLASS_MAP = "mnist"
RESULT_FIELDS = ("last", "ensemble", "lowest_clid", "best", "spearman")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="benchmarks/results/accuracy.jsonl")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--noises", nargs="+", default=list(NOISES), metavar="KIND:RATE")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="methods to run in every cell (default: the core methods in every cell and the "
        "extra methods on the small_cnn cells of the first dataset)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--temperature", nargs="+", type=float, default=[None],
                        help="CLID temperature(s); several values make a sweep")
    parser.add_argument("--limit-train", type=int, default=None, metavar="N")
    parser.add_argument("--labeled-fraction", type=float, default=None, metavar="F",
                        help="semi-supervised runs (`train --labeled-fraction`): a stratified "
                        "fraction F keeps its noisy labels, the rest feeds CLID's meta set; "
                        "cross-entropy trains on the labelled part alone")
    parser.add_argument("--meta-learning-rate", type=float, default=None, metavar="LR",
                        help="as `clidmu-tf train --meta-learning-rate` (default: the job's)")
    parser.add_argument(
        "--meta-optimizer",
        default=None,
        metavar="NAME:LR",
        help="probe another meta optimiser: sgd:LR, adam:LR or normalized-sgd:LR (SGD on the "
        "meta-gradient divided by its global norm)",
    )
    parser.add_argument("--lr-schedule", default=None, choices=["cosine", "constant", "cyclic"],
                        help="cyclic: cosine restarting every 5 epochs (the authors' code)")
    parser.add_argument("--augment", default=None, help="as `clidmu-tf train --augment`")
    parser.add_argument("--virtual-step", default=None, choices=["full", "head"],
                        help="as `clidmu-tf train --virtual-step` for the meta-learning methods "
                        "(default: the job's, full); `ce` takes no virtual step")
    parser.add_argument("--weight-normalization", default=None, choices=["batch", "class"],
                        help="as `clidmu-tf train --weight-normalization` for the "
                        "Meta-Weight-Net methods (default: the library's)")
    parser.add_argument("--snapshot-selection", default="meta-set",
                        choices=["held-out", "meta-set"],
                        help="as `clidmu-tf train --snapshot-selection` (default meta-set)")
    parser.add_argument("--tag", default="", help="a label kept with each run (probes)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: digits, mlp, symmetric:0.4, clid-wnet, seed 0, 2 epochs, "
                        "300 training samples")
    parser.add_argument("--summary", action="store_true",
                        help="print the markdown table of the runs in --results and exit")
    parser.add_argument("--by-tag", action="store_true",
                        help="with --summary: one row per tag (probes) instead of per method")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.noises, args.backbones = ["digits"], ["symmetric:0.4"], ["mlp"]
        args.methods, args.seeds, args.epochs = ["clid-wnet"], [0], 2
        args.limit_train = args.limit_train or 300
    if args.epochs < 1:
        parser.error(f"--epochs must be a positive integer. Received: --epochs={args.epochs}")
    return args


def planned_runs(args):
    """The grid's runs, as `TrainingJob` configurations plus the probe options."""
    from clidmu_tf.models.clidmu_model import DEFAULT_WEIGHT_NORMALIZATION

    runs = []
    for dataset, noise, backbone, temperature, seed in itertools.product(
        args.datasets, args.noises, args.backbones, args.temperature, args.seeds
    ):
        if args.methods is not None:
            methods = args.methods
        elif dataset == args.datasets[0] and backbone == "small_cnn":
            methods = CORE_METHODS + EXTRA_METHODS
        else:
            methods = CORE_METHODS
        for method in methods:
            config = {
                "dataset": dataset,
                "noise": noise,
                "backbone": backbone,
                "method": method,
                "seed": seed,
                "epochs": args.epochs,
                "baseline": "none",
                "export_formats": [],
                "snapshot_selection": args.snapshot_selection,
            }
            if noise.startswith("asymmetric"):
                config["class_map"] = DIGIT_CLASS_MAP
            if temperature is not None:
                config["temperature"] = temperature
            for key in ("limit_train", "labeled_fraction", "meta_learning_rate", "lr_schedule",
                        "augment"):
                value = getattr(args, key)
                if value is not None and not (key == "lr_schedule" and value == "cyclic"):
                    config[key] = value
            if args.virtual_step is not None and method != "ce":
                config["virtual_step"] = args.virtual_step
            # Recorded unless it is "batch": the runs made before the option existed used it,
            # and keep their keys (so they stay done) whatever the default has become since.
            weights = args.weight_normalization or DEFAULT_WEIGHT_NORMALIZATION
            if weights != "batch" and weights_samples(method):
                config["weight_normalization"] = weights
            probe = {
                "meta_optimizer": args.meta_optimizer,
                "cyclic": args.lr_schedule == "cyclic",
                "tag": args.tag,
            }
            runs.append({"config": config, "probe": probe})
    return runs


def weights_samples(method):
    """Whether the method's meta-model gives sample weights (Meta-Weight-Net, with a meta
    update), hence takes `weight_normalization`."""
    from clidmu_tf.cli.training_job import resolved_weight_normalization

    return resolved_weight_normalization(method, None) is not None


def job_config(config):
    """The `TrainingJob` configuration of a planned run's `config`: a run that weights samples
    and is recorded without `weight_normalization` normalises them over the batch (see
    `planned_runs`), whatever the job's default."""
    if weights_samples(config["method"]):
        return {"weight_normalization": "batch", **config}
    return config


def run_key(run):
    return json.dumps(run, sort_keys=True)


def load_results(path):
    """The runs in a results file; a last line cut short by a crash is ignored."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def append_result(path, record):
    """Appends one run as one line in a single `write` (atomic for a local file)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    line = (json.dumps(record) + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A crash mid-line from an earlier process leaves a fragment; start on a new line.
        if os.fstat(descriptor).st_size and not _ends_with_newline(path):
            line = b"\n" + line
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _ends_with_newline(path):
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def make_meta_optimizer(spec):
    """The probe's meta optimiser from `NAME:LR` (weight decay as the job's)."""
    import keras

    from clidmu_tf.models.clidmu_model import META_WEIGHT_DECAY

    name, _, rate = spec.partition(":")
    rate = float(rate)
    if name == "sgd":
        return keras.optimizers.SGD(rate, weight_decay=META_WEIGHT_DECAY)
    if name == "adam":
        return keras.optimizers.Adam(rate, weight_decay=META_WEIGHT_DECAY)
    if name == "normalized-sgd":
        return _normalized_sgd(rate)
    raise ValueError(f"Unknown --meta-optimizer {spec!r}: expected sgd:LR, adam:LR or "
                     "normalized-sgd:LR")


def _normalized_sgd(rate):
    import keras
    from keras import ops

    from clidmu_tf.models.clidmu_model import META_WEIGHT_DECAY

    class NormalizedSGD(keras.optimizers.SGD):
        """SGD on the gradient divided by its global norm: steps of length `rate`."""

        def apply(self, grads, trainable_variables=None):
            norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in grads if g is not None))
            scale = 1.0 / ops.maximum(norm, 1e-12)
            return super().apply([None if g is None else g * scale for g in grads],
                                 trainable_variables)

    return NormalizedSGD(rate, weight_decay=META_WEIGHT_DECAY)


def execute(run, directory):
    """Trains one run with the command line's job and returns its record."""
    import keras

    from clidmu_tf.cli.training_job import COSINE_ALPHA, MOMENTUM, WEIGHT_DECAY, TrainingJob

    probe = run["probe"]

    from clidmu_tf.metrics.clid import CLID

    class EpochLogits(keras.callbacks.Callback):
        """Keeps the test logits of every epoch, for the label-free selection rules, and the
        meta set's CLID (the paper's snapshot score), whatever the job ranks by."""

        def __init__(self, inputs, meta_stream):
            super().__init__()
            self.inputs = inputs
            self.meta_stream = meta_stream
            self.logits = []
            self.meta_clid = []

        def on_epoch_end(self, epoch, logs=None):
            self.logits.append(self.model.predict(self.inputs, batch_size=512, verbose=0))
            metric = CLID(temperature=self.model.temperature)
            for batch in self.meta_stream:
                metric.update_state(None, self.model.backbone(batch, training=False))
            self.meta_clid.append(float(metric.result()))

    class BenchmarkJob(TrainingJob):
        """The command line's job; it also keeps per-epoch test logits, draws no plots and
        ranks no label issues, and applies the probe's optimiser settings."""

        def _compiled_model(self, meta_objective, data):
            model = super()._compiled_model(meta_objective, data)
            if probe["meta_optimizer"] or probe["cyclic"]:
                optimizer = model.optimizer
                if probe["cyclic"]:
                    schedule = keras.optimizers.schedules.CosineDecayRestarts(
                        self.config["learning_rate"],
                        first_decay_steps=CYCLE_EPOCHS * data.steps_per_epoch,
                        t_mul=1.0,
                        m_mul=1.0,
                        alpha=COSINE_ALPHA,
                    )
                    optimizer = keras.optimizers.SGD(
                        schedule, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
                    )
                meta_optimizer = (
                    make_meta_optimizer(probe["meta_optimizer"])
                    if probe["meta_optimizer"]
                    else model.meta_optimizer
                )
                model.compile(
                    optimizer=optimizer,
                    meta_optimizer=meta_optimizer,
                    jit_compile=self.config["jit"],
                )
            return model

        def _fit(self, model, data, name, callbacks):
            self.epoch_logits = EpochLogits(
                self.data.dataset.inputs(split="test"), self.data.meta_stream
            )
            super()._fit(model, data, name, [*callbacks, self.epoch_logits])

        def _rank_label_errors(self):
            pass

        def _plot(self):
            pass

    job = BenchmarkJob(job_config(run["config"]), directory, overwrite=True, verbose=0)
    start = time.time()
    status = job.run()
    seconds = time.time() - start
    if status != "completed":
        raise RuntimeError(f"run ended {status}")
    report = job.report
    epochs = report["method"]["epochs"]
    test_accuracy = [entry["test_accuracy"] for entry in epochs]
    meta_clid = job.epoch_logits.meta_clid
    selection_clid = [entry[job.selection_monitor] for entry in epochs]
    held_out_clid = [entry.get("test_clid") for entry in epochs]
    logits = np.stack(job.epoch_logits.logits)
    labels = job.test_labels
    members = [member["epoch"] for member in report["ensemble"]["members"]]
    best_epoch = int(np.argmax(test_accuracy)) + 1
    record = {
        "run": run,
        # The job's whole configuration, defaults resolved (they may change between runs).
        "job_config": job.config,
        "meta_optimizer": type(job.model.meta_optimizer).__name__,
        "meta_learning_rate": float(job.model.meta_optimizer.learning_rate),
        "seconds": round(seconds, 1),
        "noise_flip_rate": report["noise"]["flip_rate"],
        "test_accuracy": test_accuracy,
        "meta_clid": meta_clid,
        "selection_clid": selection_clid,
        "num_selection": len(job.data.selection_indices),
        "augmentation": job.data.augmentation.get_config(),
        "held_out_clid": held_out_clid,
        "last": test_accuracy[-1],
        "ensemble": report["ensemble_test_accuracy"],
        "ensemble_epochs": members,
        "lowest_clid": report["ensemble"]["lowest_clid_epoch_test_accuracy"],
        "lowest_clid_epoch": report["ensemble"]["lowest_clid_epoch"],
        "best": test_accuracy[best_epoch - 1],
        "best_epoch": best_epoch,
        "spearman": spearman(meta_clid, test_accuracy),
        "rules": selection_rules(
            logits, labels, meta_clid, selection_clid, held_out_clid, probe["cyclic"]
        ),
    }
    return record


def ensemble_accuracy(logits, labels, epochs):
    """Test accuracy of the mean logits of `epochs` (numbered from 1)."""
    mean = logits[[epoch - 1 for epoch in epochs]].mean(axis=0)
    return float(np.mean(np.argmax(mean, axis=1) == labels))


def lowest(scores, candidates, k=ENSEMBLE_SIZE):
    """The `k` candidate epochs (from 1) with the lowest score; ties to the earlier epoch."""
    ranked = sorted(candidates, key=lambda epoch: (scores[epoch - 1], epoch))
    return sorted(ranked[:k])


def selection_rules(logits, labels, meta_clid, selection_clid, held_out_clid, cyclic):
    """Test accuracy of the job's snapshot rule recomputed (`selection_top5`, the five
    lowest `selection_clid` epochs), of the paper's (`paper_top5`) and of other label-free
    rules."""
    num_epochs = len(meta_clid)
    epochs = list(range(1, num_epochs + 1))
    rules = {
        "selection_top5": lowest(selection_clid, epochs),
        "paper_top5": lowest(meta_clid, epochs),
        "last5": epochs[-ENSEMBLE_SIZE:],
        "second_half_top5": lowest(meta_clid, epochs[num_epochs // 2 :]),
    }
    if all(value is not None for value in held_out_clid):
        rules["held_out_clid_top5"] = lowest(held_out_clid, epochs)
    if cyclic:
        rules["cycle_ends_top5"] = lowest(meta_clid, epochs[CYCLE_EPOCHS - 1 :: CYCLE_EPOCHS])
    return {
        name: {"epochs": members, "accuracy": ensemble_accuracy(logits, labels, members)}
        for name, members in rules.items()
    }


def spearman(a, b):
    """Spearman's rho, or None where it is undefined (fewer than 3 epochs, a constant)."""
    from scipy import stats

    if len(a) < 3:
        return None
    rho = stats.spearmanr(a, b).statistic
    return None if np.isnan(rho) else float(rho)


def describe(run):
    config, probe = run["config"], run["probe"]
    text = (f"{config['dataset']} {config['noise']} {config['backbone']} {config['method']} "
            f"seed {config['seed']}")
    extras = [f"tau={config['temperature']}"] if "temperature" in config else []
    extras += [f"{key}={value}" for key, value in probe.items() if value]
    return text + (f" ({', '.join(extras)})" if extras else "")


def run_grid(args):
    runs = planned_runs(args)
    done = {run_key(record["run"]) for record in load_results(args.results)}
    pending = [run for run in runs if run_key(run) not in done]
    print(f"{len(runs)} runs planned, {len(runs) - len(pending)} already in {args.results}, "
          f"{len(pending)} to run", flush=True)
    durations = []
    for index, run in enumerate(pending, 1):
        print(f"[{index}/{len(pending)}] {describe(run)} ...", end=" ", flush=True)
        with tempfile.TemporaryDirectory() as directory:
            record = execute(run, os.path.join(directory, "run"))
        append_result(args.results, record)
        durations.append(record["seconds"])
        remaining = np.mean(durations) * (len(pending) - index)
        print(f"{record['seconds']:.0f} s: last {record['last']:.3f}, ensemble "
              f"{record['ensemble']:.3f}, best {record['best']:.3f} (epoch "
              f"{record['best_epoch']}); ETA {_duration(remaining)}", flush=True)


def _duration(seconds):
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes} min"


def summarize(records, by_tag=False):
    """Cells (dataset, noise, backbone, method or tag, temperature, epochs, snapshot
    selection, meta optimiser) with mean and std."""
    from clidmu_tf.models.clidmu_model import DEFAULT_WEIGHT_NORMALIZATION as default_weights

    cells = {}
    for record in records:
        config, probe = record["run"]["config"], record["run"]["probe"]
        name = probe.get("tag") or config["method"] if by_tag else config["method"]
        if config.get("labeled_fraction") is not None:
            name += f" ({config['labeled_fraction']:.0%} labelled)"
        if config.get("virtual_step", "full") != "full":
            name += f" ({config['virtual_step']} step)"
        # Named where it is not the library's default; recorded only where it is not "batch".
        weights = config.get("weight_normalization", "batch")
        if weights_samples(config["method"]) and weights != default_weights:
            name += f" ({weights}-normalised weights)"
        key = (config["dataset"], config["noise"], config["backbone"], name,
               config.get("temperature", 0.5), config["epochs"],
               # Runs before the held-out selection set ranked by the meta set.
               config.get("snapshot_selection", "meta-set"),
               _meta_optimizer_name(record))
        cells.setdefault(key, []).append(record)
    rows = []
    for key, members in sorted(cells.items()):
        row = {"cell": key, "seeds": len(members)}
        for field in RESULT_FIELDS:
            row[field] = _mean_std([m[field] for m in members if m[field] is not None])
        rule_names = sorted({name for m in members for name in m["rules"]})
        row["rules"] = {
            name: _mean_std([m["rules"][name]["accuracy"] for m in members if name in m["rules"]])
            for name in rule_names
        }
        rows.append(row)
    return rows


def _meta_optimizer_name(record):
    """`SGD 1e-02` from a record (the earliest records name only the probe's option)."""
    if "meta_optimizer" in record:
        return f"{record['meta_optimizer']} {record['meta_learning_rate']:.0e}"
    return record["run"]["probe"].get("meta_optimizer") or "SGD 1e-02"


def _mean_std(values):
    """Mean and sample standard deviation (None for one value); None for no values."""
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def _format(value, scale, digits, sign=""):
    if value is None:
        return "n/a"
    mean, std = value
    text = f"{scale * mean:{sign}.{digits}f}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def markdown_table(rows, rules=False):
    header = ["dataset", "noise", "backbone", "method", "tau", "epochs", "selection",
              "meta optimiser", "seeds", "last epoch",
              "CLID ensemble", "lowest-CLID epoch", "best epoch (oracle)",
              "Spearman(CLID, acc)"]
    rule_names = sorted({name for row in rows for name in row["rules"]}) if rules else []
    header += rule_names
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        dataset, noise, backbone, method, temperature, epochs, selection, optimizer = row["cell"]
        cells = [dataset, noise, backbone, method, f"{temperature:g}", str(epochs), selection,
                 optimizer, str(row["seeds"])]
        for field in RESULT_FIELDS:
            if field == "spearman":
                cells.append(_format(row[field], 1, 2, sign="+"))
            else:
                cells.append(_format(row[field], 100, 1))
        cells += [_format(row["rules"].get(name), 100, 1) for name in rule_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.summary:
        records = load_results(args.results)
        if not records:
            sys.exit(f"No finished runs in {args.results}.")
        print(markdown_table(summarize(records, by_tag=args.by_tag), rules=args.by_tag))
        return
    run_grid(args)


if __name__ == "__main__":
    main()
