"""The `clidmu-tf` command line: train, export, predict, evaluate, inspect and tune.

Every argument is checked before any data is loaded or model built, so a typo fails in a
second with a message that lists what is accepted.
"""

import argparse
import difflib
import json
import os
import sys

from clidmu_tf import training_job
from clidmu_tf.run_directory import RunDirectory
from clidmu_tf.run_report import RunReport

PROG = "clidmu-tf"
EXIT_FAILED = 1
EXIT_USAGE = 2
# The shell's convention for a process stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
MODEL_KINDS = ("ensemble", "final", "baseline")
TUNE_METHODS = ("clid-wnet", "clid-vri", "wnet-noisy-meta", "wnet-mae-meta", "ce")
# The keras-tuner project folder inside `tune --out`; its presence means a search to resume.
TUNE_PROJECT = "search"


class _ArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose unknown-option error lists the valid options."""

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = getattr(namespace, "parser", self)
            options = sorted(
                option
                for action in parser._actions
                if action.help != argparse.SUPPRESS
                for option in action.option_strings
                if option.startswith("--")
            )
            close = difflib.get_close_matches(extras[0].split("=")[0], options, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            parser.error(
                f"unrecognized arguments: {' '.join(extras)}.{hint} Valid options: "
                f"{', '.join(options)}"
            )
        return namespace


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer. Received: {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number. Received: {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1). Received: {text!r}")
    return value


def _image_size(text):
    height, _, width = text.lower().partition("x")
    try:
        size = (int(height), int(width))
    except ValueError:
        size = (0, 0)
    if min(size) < 1:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH in pixels, e.g. 32x32. Received: {text!r}"
        )
    return size


def _export_formats(text):
    formats = [name.strip() for name in text.split(",") if name.strip()]
    if text == "none":
        return []
    unknown = [name for name in formats if name not in training_job.EXPORT_FORMATS]
    if not formats or unknown:
        raise argparse.ArgumentTypeError(
            f"expected 'none' or a comma-separated subset of "
            f"{list(training_job.EXPORT_FORMATS)}. Received: {text!r}"
        )
    return formats


def _add_data_arguments(parser, defaults):
    parser.add_argument(
        "--dataset",
        default=defaults["dataset"],
        help="digits (offline, default) or mnist_5k (offline); mnist, fashion_mnist, kmnist, "
        "svhn_cropped, cifar10, cifar100, cifar10_n, cifar100_n (tfds, prepared in --data-dir); "
        "'tfds:NAME' for another prepared tfds dataset; a folder with one sub-folder of images "
        "per class; or an .npz file with arrays x and y (optionally x_test, y_test, "
        "class_names).",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the tfds data directory holding prepared datasets (tfds's default if omitted); "
        "nothing is ever downloaded.",
    )
    parser.add_argument(
        "--image-size", type=_image_size, metavar="HxW",
        help="resize the images of a folder dataset, e.g. 32x32 (needed when sizes differ).",
    )
    parser.add_argument(
        "--label-file",
        metavar="FILE",
        help="for cifar10_n / cifar100_n: the CIFAR-N human label file (.pt, .npy or .npz).",
    )
    parser.add_argument(
        "--noise",
        default=defaults["noise"],
        metavar="KIND:RATE",
        help="label noise to inject: 'none', or KIND:RATE with KIND one of symmetric, "
        "symmetric_exclusive, asymmetric, cifar100_superclass, pair, random_flip, instance and "
        f"RATE in [0, 1] (default {defaults['noise']}).",
    )
    parser.add_argument(
        "--class-map", choices=training_job.CLASS_MAPS,
        help="the confusions of asymmetric noise: mnist (7->1, 2->7, 5<->6, 3->8) or cifar10 "
        "(truck->automobile, bird->airplane, deer->horse, cat<->dog); default: the dataset's "
        "own, where it has one (mnist, mnist_5k, svhn_cropped, cifar10).",
    )
    parser.add_argument(
        "--limit-train", type=_positive_int, metavar="N",
        help="train on a stratified subset of N training samples (quick runs and smoke tests).",
    )
    parser.add_argument(
        "--seed", type=_non_negative_int, metavar="N", default=defaults["seed"],
        help=f"seeds the noise, the splits, the shuffling and the weights (default "
        f"{defaults['seed']}).",
    )


def build_parser():
    """The `clidmu-tf` argument parser, with one sub-parser per sub-command."""
    defaults = training_job.DEFAULTS
    parser = _ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description="Train Keras classifiers on noisy labels without a clean validation set "
        "(CLID-MU, Hu et al., KDD 2025).",
    )
    from clidmu_tf import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train", allow_abbrev=False,
        help="train CLID-MU and a cross-entropy baseline, build and export the snapshot ensemble",
        description="Inject label noise, train CLID-MU and a plain cross-entropy baseline on the "
        "same data, keep the CLID snapshot ensemble, export it (SavedModel and ONNX, verified), "
        "draw the plots and write report.json. With no options it runs offline on scikit-learn's "
        "digits in a few minutes on two CPU cores. Ctrl-C stops training, keeps the snapshots "
        "saved so far and still writes the report (status 'interrupted').",
    )
    train.set_defaults(handler=_train, parser=train)
    _add_data_arguments(train, defaults)
    train.add_argument(
        "--method", choices=sorted(training_job.METHODS), default=defaults["method"],
        help="clid-wnet (default) and clid-vri: CLID-MU with Meta-Weight-Net or the VRI "
        "rectifier; ce: plain cross-entropy; wnet-/vri-clean-meta: the meta loss on a clean "
        "labelled meta set (an oracle); wnet-/vri-noisy-meta, wnet-mae-meta: CE or MAE on a "
        "noisy meta set.",
    )
    train.add_argument(
        "--baseline", choices=training_job.BASELINES, default=defaults["baseline"],
        help="also train this baseline on the same data for comparison (default ce; none to skip).",
    )
    train.add_argument(
        "--backbone", choices=training_job.BACKBONES, default=defaults["backbone"],
        help="the classifier; auto (default) is small_cnn for images and mlp otherwise.",
    )
    train.add_argument("--epochs", type=_positive_int, metavar="N", default=defaults["epochs"],
                       help=f"training epochs (default {defaults['epochs']}).")
    train.add_argument("--batch-size", type=_positive_int, metavar="N",
                       default=defaults["batch_size"],
                       help=f"training batch size (default {defaults['batch_size']}).")
    train.add_argument(
        "--meta-size", type=_positive_int, metavar="N",
        help="size of the meta set drawn from the noisy training data (default: a fifth of the "
        "training set, at most 1000 as in the paper).",
    )
    train.add_argument("--meta-batch-size", type=_positive_int, metavar="N",
                       help="meta batch size (default: the training batch size).")
    train.add_argument("--temperature", type=_positive_float, metavar="TAU",
                       default=defaults["temperature"],
                       help=f"CLID's temperature (default {defaults['temperature']}).")
    train.add_argument(
        "--meta-every", type=_positive_int, metavar="N", default=defaults["meta_every"],
        help="update the meta-model every N steps (default 1; must be 1 with --distribute).",
    )
    train.add_argument("--learning-rate", type=_positive_float, metavar="LR",
                       default=defaults["learning_rate"],
                       help=f"classifier SGD learning rate (default {defaults['learning_rate']}).")
    train.add_argument("--lr-schedule", choices=training_job.LR_SCHEDULES,
                       default=defaults["lr_schedule"],
                       help="cosine (default, down to 2%% of the rate) or constant.")
    train.add_argument(
        "--meta-learning-rate", type=_positive_float, metavar="LR",
        default=defaults["meta_learning_rate"],
        help="meta-model learning rate (default 1e-2: SGD for Meta-Weight-Net, Adam for VRI).",
    )
    train.add_argument("--top-k", type=_positive_int, metavar="K", default=defaults["top_k"],
                       help="epochs kept in the CLID snapshot ensemble (default 5).")
    from clidmu_tf.pipelines import Augmentation

    train.add_argument(
        "--augment", choices=["auto", *sorted(Augmentation.RECIPES)], default=defaults["augment"],
        help="training augmentation; auto (default) uses the dataset's usual recipe.",
    )
    train.add_argument("--out", required=True, metavar="DIR",
                       help="the run directory to write (must be new or empty).")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an earlier run in --out.")
    train.add_argument(
        "--distribute", choices=training_job.DISTRIBUTIONS, default=defaults["distribute"],
        help="none (default); mirrored: tf.distribute.MirroredStrategy over the local GPUs "
        "(or the CPU); multiworker: MultiWorkerMirroredStrategy, which needs the TF_CONFIG "
        "environment variable describing the cluster on every worker (each worker runs the "
        "same command).",
    )
    train.add_argument("--jit", action="store_true",
                       help="compile the training step with XLA (faster on GPUs, slower on CPUs).")
    train.add_argument(
        "--export-formats", type=_export_formats, default=defaults["export_formats"],
        metavar="FORMATS",
        help="comma-separated subset of saved_model,onnx (default both), or none.",
    )
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 silent, 1 progress bars (default), 2 one line per epoch.")

    export = commands.add_parser(
        "export",
        allow_abbrev=False,
        help="export a run's snapshot ensemble to SavedModel and ONNX, verified",
        description="Export a finished run's CLID snapshot ensemble (or its final or baseline "
        "model) to SavedModel and ONNX, verify both against Keras on the test split, and write "
        "model_card.json.",
    )
    export.set_defaults(handler=_export, parser=export)
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--out", metavar="DIR", help="export directory (default RUN_DIR/export).")
    export.add_argument("--model", choices=MODEL_KINDS, default="ensemble",
                        help="which model of the run to export (default ensemble).")
    export.add_argument("--formats", type=_export_formats,
                        default=list(training_job.EXPORT_FORMATS), metavar="FORMATS",
                        help="comma-separated subset of saved_model,onnx (default both).")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing export directory.")

    predict = commands.add_parser(
        "predict",
        allow_abbrev=False,
        help="predict classes of a numpy file, an image or a folder of images",
        description="Predict with MODEL: a run directory, an export directory, a .onnx or "
        ".keras file. INPUT: a .npy/.npz array [N, ...] (uint8 is divided by 255), an image "
        "file, or a folder of images (resized to the model's input). Writes CSV.",
    )
    predict.set_defaults(handler=_predict, parser=predict)
    predict.add_argument("model", metavar="MODEL")
    predict.add_argument("input", metavar="INPUT")
    predict.add_argument("--model-kind", choices=MODEL_KINDS, default="ensemble",
                         help="with a run directory: which of its models (default ensemble).")
    predict.add_argument("--output", metavar="CSV", help="write here instead of to stdout.")
    predict.add_argument("--batch-size", type=_positive_int, default=256, metavar="N")

    evaluate = commands.add_parser(
        "evaluate",
        allow_abbrev=False,
        help="accuracy and loss of a model on a labelled test set",
        description="Evaluate MODEL (a run directory, an export directory, a .onnx or .keras "
        "file) on the test split of --dataset (default: the run's dataset), or on --inputs "
        "with --labels. Prints JSON.",
    )
    evaluate.set_defaults(handler=_evaluate, parser=evaluate)
    evaluate.add_argument("model", metavar="MODEL")
    evaluate.add_argument("--dataset", metavar="DATASET",
                          help="a --dataset value as for train (see train --help).")
    evaluate.add_argument("--data-dir", metavar="DIR", help="the tfds data directory.")
    evaluate.add_argument("--image-size", type=_image_size, metavar="HxW")
    evaluate.add_argument("--inputs", metavar="FILE", help="a .npy/.npz of inputs.")
    evaluate.add_argument("--labels", metavar="FILE", help="a .npy of integer labels.")
    evaluate.add_argument("--model-kind", choices=MODEL_KINDS, default="ensemble",
                          help="with a run directory: which of its models (default ensemble).")
    evaluate.add_argument("--output", metavar="JSON", help="also write the result here.")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256, metavar="N")

    inspect = commands.add_parser(
        "inspect",
        allow_abbrev=False,
        help="the training samples the meta-model trusts least (likely label errors)",
        description="Rank a run's training samples by the meta-model's trust in their label "
        "(model.per_sample_weights), least trusted first, as CSV: rank, index (position in the "
        "dataset's training split), weight, given label, the model's prediction and confidence, "
        "and, when the noise was injected, the true label.",
    )
    inspect.set_defaults(handler=_inspect, parser=inspect)
    inspect.add_argument("run_dir", metavar="RUN_DIR")
    inspect.add_argument("--top", type=_positive_int, metavar="N", default=50,
                         help="how many samples to list (default 50).")
    inspect.add_argument("--all", action="store_true", help="list every training sample.")
    inspect.add_argument("--output", metavar="CSV", help="write here instead of to stdout.")

    tune = commands.add_parser(
        "tune",
        allow_abbrev=False,
        help="hyperparameter search ranked by CLID on held-out noisy data",
        description="Search CLIDMUModel's hyperparameters with keras-tuner. Trials are ranked by "
        "--objective; the default, val_clid, reads no labels. A fraction of the noisy training "
        "set is held out for validation; when the noise was injected its true labels are "
        "logged as val_clean_accuracy for reference.",
    )
    tune.set_defaults(handler=_tune, parser=tune)
    _add_data_arguments(tune, defaults)
    tune.add_argument("--method", choices=TUNE_METHODS, default="clid-wnet",
                      help="the method whose hyperparameters are searched (default clid-wnet).")
    tune.add_argument("--backbone", nargs="+", default=["mlp"],
                      choices=[name for name in training_job.BACKBONES if name != "auto"],
                      help="one or more backbones to search over (default mlp).")
    tune.add_argument("--objective", default="val_clid",
                      choices=["val_clid", "val_loss", "val_accuracy", "val_clean_loss",
                               "val_clean_accuracy"],
                      help="what ranks the trials (default val_clid, label-free).")
    tune.add_argument("--tuner", choices=("random", "bayesian"), default="random")
    tune.add_argument("--max-trials", type=_positive_int, default=10, metavar="N")
    tune.add_argument("--epochs", type=_positive_int, default=10, metavar="N",
                      help="epochs per trial (default 10).")
    tune.add_argument("--validation-fraction", type=_fraction, metavar="F", default=0.2,
                      help="share of the noisy training set held out (default 0.2).")
    tune.add_argument("--out", required=True, metavar="DIR",
                      help="the search directory (keras-tuner files and summary.json).")
    tune.add_argument("--overwrite", action="store_true",
                      help="start afresh instead of resuming the search in --out.")
    tune.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    return parser


def main(argv=None):
    """Runs the `clidmu-tf` command line; returns the exit status.

    Args:
        argv: the arguments, without the program name; `sys.argv[1:]` when None.

    Returns:
        0 on success, 1 when the command failed, 2 for a usage error (argparse exits with it
        directly), 130 for a training run stopped by Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        partial = os.path.join(getattr(args, "out", None) or "", RunReport.PARTIAL_NAME)
        if args.command == "train" and os.path.isfile(partial):
            print(f"The run failed; its partial report is {partial}.", file=sys.stderr)
        return EXIT_FAILED


def _fail_usage(args, message):
    args.parser.error(message)


# Sub-commands.


def _check_data_arguments(args):
    """Checks `--noise`, `--class-map` and `--dataset`; returns the noise's (kind, rate)."""
    from clidmu_tf.data_sources import check_dataset_argument

    try:
        kind, rate = training_job.parse_noise(args.noise)
        check_dataset_argument(args.dataset, args.data_dir)
    except ValueError as error:
        _fail_usage(args, str(error))
    if args.class_map is not None and kind != "asymmetric":
        _fail_usage(
            args,
            f"--class-map applies to asymmetric noise only. Received: --noise={args.noise!r}",
        )
    return kind, rate


def _train(args):
    _check_data_arguments(args)
    try:
        RunDirectory(args.out).check_writable(args.overwrite)
    except ValueError as error:
        _fail_usage(args, str(error))
    if args.distribute == "multiworker" and not os.environ.get("TF_CONFIG"):
        _fail_usage(
            args,
            "--distribute multiworker needs the TF_CONFIG environment variable on every worker, "
            'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\'',
        )
    if args.distribute != "none" and args.meta_every != 1:
        _fail_usage(
            args,
            f"--meta-every must be 1 with --distribute {args.distribute} (the skipped meta "
            f"update cannot synchronise replicas). Received: --meta-every={args.meta_every}",
        )
    config = {key: getattr(args, key) for key in training_job.DEFAULTS}
    job = training_job.TrainingJob(config, args.out, overwrite=args.overwrite, verbose=args.verbose)
    status = job.run()
    print(comparison_table(job.report.data, args.out))
    return EXIT_INTERRUPTED if status == "interrupted" else 0


def comparison_table(report, run_dir):
    """The short comparison printed at the end of `train`, from a report dict."""
    noise = report.get("noise") or {}
    data = report.get("data") or {}
    config = report["config"]
    lines = [
        "",
        f"{config['dataset']}: {data.get('num_train', '?')} training samples, noise "
        f"{config['noise']} (realised flip rate {noise.get('flip_rate', 0.0):.1%}), "
        f"{data.get('num_test', '?')} test samples.",
        "",
        f"{'model':<46}{'test accuracy':>14}",
        "-" * 60,
    ]

    def row(name, value):
        text = "n/a" if value is None else f"{value:.4f}"
        lines.append(f"{name:<46}{text:>14}")

    if "baseline_test_accuracy" in report:
        row("cross-entropy baseline (last epoch)", report["baseline_test_accuracy"])
    row(f"{config['method']} (last epoch)", report.get("test_accuracy"))
    ensemble = report.get("ensemble") or {}
    if "lowest_clid_epoch" in ensemble:
        row(f"{config['method']} (epoch {ensemble['lowest_clid_epoch']}, lowest CLID)",
            ensemble.get("lowest_clid_epoch_test_accuracy"))
    members = len(ensemble.get("members", []))
    row(f"{config['method']} CLID snapshot ensemble (top {members})",
        report.get("ensemble_test_accuracy"))
    detection = report.get("label_error_detection")
    lines.append("-" * 60)
    if detection:
        lines.append(
            f"Finding the flipped labels by low meta-model weight: ROC AUC "
            f"{detection['roc_auc']:.3f}, precision {detection['precision_at_noise_count']:.3f} "
            f"among the {noise.get('num_flipped')} least trusted."
        )
    timings = report.get("timings", {})
    lines.append(
        f"Status: {report['status']}, {timings.get('total', 0.0):.0f} s. Run directory: {run_dir}"
    )
    return "\n".join(lines)


def _run_with_report(run_dir):
    run = RunDirectory(run_dir)
    return run, run.report()


def _export(args):
    import numpy as np

    from clidmu_tf.callbacks import read_snapshot_manifest
    from clidmu_tf.export import export_ensemble

    run, report = _run_with_report(args.run_dir)
    out = args.out or run.export
    if not args.formats:
        _fail_usage(args, "--formats must name at least one of saved_model, onnx.")
    model = run.load_model(args.model)
    dataset = run.load_dataset()
    members = None
    if args.model == "ensemble":
        members = read_snapshot_manifest(run.snapshots)["snapshots"]
    accuracy_key = {"ensemble": "ensemble_test_accuracy", "final": "test_accuracy",
                    "baseline": "baseline_test_accuracy"}[args.model]
    card = export_ensemble(
        model,
        out,
        formats=tuple(args.formats),
        class_names=report["data"].get("class_names"),
        preprocessing=training_job.describe_preprocessing(dataset),
        noise_report=report.get("noise"),
        metrics={"test_accuracy": report.get(accuracy_key)},
        members=members,
        verification_inputs=dataset.inputs(split="test")[: training_job.VERIFICATION_SAMPLES],
        overwrite=args.overwrite,
    )
    verification = card.get("verification")
    formats = ", ".join(args.formats)
    print(f"Exported the {args.model} model of {args.run_dir} to {out} ({formats}).")
    if verification is not None:
        print(json.dumps(verification, indent=2, default=lambda value: np.asarray(value).tolist()))
    return 0


def _predict(args):
    from clidmu_tf.input_files import read_inputs
    from clidmu_tf.loaded_classifier import LoadedClassifier

    classifier = LoadedClassifier(args.model, model_kind=args.model_kind)
    names, x = read_inputs(args.input, classifier.input_shape)
    probabilities = classifier.predict_proba(x, batch_size=args.batch_size)
    predicted = probabilities.argmax(axis=1)
    header = ["input", "predicted_class"]
    if classifier.class_names:
        header.append("predicted_name")
    header.append("confidence")
    rows = []
    for name, label, row in zip(names, predicted, probabilities):
        values = [name, str(int(label))]
        if classifier.class_names:
            values.append(str(classifier.class_names[label]))
        values.append(f"{row[label]:.4f}")
        rows.append(values)
    _write_csv(args.output, header, rows)
    return 0


def _write_csv(path, header, rows):
    import csv

    handle = open(path, "w", newline="", encoding="utf-8") if path else sys.stdout
    try:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if path:
            handle.close()


def _evaluate(args):
    import numpy as np

    from clidmu_tf.data_sources import check_dataset_argument, load_source_dataset
    from clidmu_tf.input_files import read_array
    from clidmu_tf.loaded_classifier import LoadedClassifier

    if (args.inputs is None) != (args.labels is None):
        _fail_usage(args, "pass both --inputs and --labels, or neither.")
    if args.inputs is not None and args.dataset is not None:
        _fail_usage(args, "pass either --dataset or --inputs/--labels, not both.")
    if args.dataset is not None:
        try:
            check_dataset_argument(args.dataset, args.data_dir)
        except ValueError as error:
            _fail_usage(args, str(error))
    elif args.inputs is None and not RunDirectory(args.model).is_run:
        _fail_usage(args, "MODEL is not a run directory: pass --dataset or --inputs/--labels.")
    classifier = LoadedClassifier(args.model, model_kind=args.model_kind)
    if args.inputs is not None:
        x, y = read_array(args.inputs), np.asarray(read_array(args.labels)).reshape(-1)
        source = args.inputs
    else:
        if args.dataset is None:
            dataset = classifier.run.load_dataset()
        else:
            dataset = load_source_dataset(
                args.dataset, data_dir=args.data_dir, image_size=args.image_size
            )
        x, y = dataset.inputs(split="test"), dataset.y_test
        source = f"{dataset.name} (test split)"
    if len(x) != len(y):
        raise ValueError(
            f"--inputs and --labels must have the same length. Received: {len(x)} inputs and "
            f"{len(y)} labels"
        )
    probabilities = classifier.predict_proba(x, batch_size=args.batch_size)
    if y.min() < 0 or y.max() >= probabilities.shape[1]:
        raise ValueError(
            f"The labels must be class ids in [0, {probabilities.shape[1]}). Received labels in "
            f"[{y.min()}, {y.max()}]"
        )
    predicted = probabilities.argmax(axis=1)
    true_class_probability = np.maximum(probabilities[np.arange(len(y)), y], 1e-12)
    classes = probabilities.shape[1]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    result = {
        "model": args.model,
        "data": source,
        "num_samples": int(len(y)),
        "accuracy": float(np.mean(predicted == y)),
        "cross_entropy": float(-np.mean(np.log(true_class_probability))),
        "per_class_accuracy": per_class.round(4).tolist(),
        "confusion_matrix": confusion.tolist(),
    }
    text = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    print(text)
    return 0


def _inspect(args):
    from clidmu_tf.label_errors import rank_label_errors, score_samples, write_label_errors_csv

    run, report = _run_with_report(args.run_dir)
    method = report["config"]["method"]
    if training_job.METHODS[method][1] == "none":
        raise ValueError(
            f"The run in {args.run_dir!r} trained with --method {method}, which learns no "
            "meta-model, so it has no per-sample trust to rank. Inspect a run of a meta method "
            f"({', '.join(m for m in sorted(training_job.METHODS) if m != 'ce')})."
        )
    labels = run.training_labels()
    dataset = run.load_dataset()
    model = run.load_model("final")
    x = dataset.inputs(labels["indices"])
    weights, probabilities = score_samples(model, x, labels["given"])
    noise_known = report.get("noise", {}).get("kind") not in (None, "none")
    rows = rank_label_errors(
        weights,
        probabilities,
        labels["given"],
        indices=labels["indices"],
        true=labels["true"] if noise_known else None,
        class_names=report["data"].get("class_names"),
        top=None if args.all else args.top,
    )
    write_label_errors_csv(args.output or sys.stdout, rows)
    return 0


def _tune(args):
    import numpy as np

    from clidmu_tf.data_sources import load_source_dataset
    from clidmu_tf.pipelines import stratified_split

    noise_kind, noise_rate = _check_data_arguments(args)
    if os.path.isfile(args.out):
        _fail_usage(args, f"--out must be a directory. Received: --out={args.out!r}, a file")
    if (
        os.path.isdir(args.out)
        and os.listdir(args.out)
        and not os.path.isdir(os.path.join(args.out, TUNE_PROJECT))
    ):
        _fail_usage(
            args,
            f"--out {args.out!r} is not empty and holds no search to resume or overwrite; "
            "choose another directory.",
        )
    from clidmu_tf.tuning import run_search

    dataset = load_source_dataset(
        args.dataset, data_dir=args.data_dir, image_size=args.image_size, label_file=args.label_file
    )
    clean = dataset.clean_train_labels
    pool = np.arange(len(clean))
    if args.limit_train is not None:
        pool, _ = stratified_split(clean, size=min(args.limit_train, len(clean)), seed=args.seed)
    given = dataset.y_train
    if noise_kind is not None:
        given, _ = dataset.corrupt_train_labels(
            kind=noise_kind, rate=noise_rate, seed=args.seed, class_map=args.class_map
        )
    validation, train = stratified_split(
        given[pool], size=max(2, round(args.validation_fraction * len(pool))), seed=args.seed
    )
    train, validation = pool[train], pool[validation]
    noise_known = noise_kind is not None or dataset.y_train_clean is not None
    meta_model, meta_objective = training_job.METHODS[args.method]
    _, summary = run_search(
        dataset.inputs(train),
        given[train],
        dataset.inputs(validation),
        given[validation],
        y_val_clean=clean[validation] if noise_known else None,
        num_classes=dataset.num_classes,
        objective=args.objective,
        tuner=args.tuner,
        max_trials=args.max_trials,
        epochs=args.epochs,
        backbone=args.backbone,
        meta_model=meta_model,
        meta_objective=meta_objective,
        directory=args.out,
        project_name=TUNE_PROJECT,
        overwrite=args.overwrite,
        seed=args.seed,
        verbose=args.verbose,
    )
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    print(_trials_table(summary))
    return 0


def _trials_table(summary):
    objective = summary["objective"]["name"]
    lines = [f"{'trial':<8}{objective:>14}{'val_clean_accuracy':>20}  hyperparameters"]
    for trial in summary["trials"]:
        score = trial["score"]
        clean = trial["metrics"].get("val_clean_accuracy")
        values = ", ".join(f"{key}={value}" for key, value in trial["hyperparameters"].items())
        lines.append(
            f"{trial['trial_id']:<8}{'n/a' if score is None else f'{score:.4f}':>14}"
            f"{'n/a' if clean is None else f'{clean:.4f}':>20}  {values}"
        )
    best = summary["best"]
    if best:
        lines.append(f"Best trial by {objective}: {best['trial_id']} ({best['score']:.4f}).")
    return "\n".join(lines)
