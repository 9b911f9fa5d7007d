"""What the `clidmu-tf` sub-commands share: the parser class, argument types, the data
arguments of `train` and `tune`, and the exit statuses."""

import argparse
import difflib
import logging
import math
import os
import re
import sys

from clidmu_tf.cli import training_job

PROG = "clidmu-tf"
EXIT_FAILED = 1
EXIT_USAGE = 2
# The shell's convention for a process stopped by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
# The models of a run directory that `export`, `predict` and `evaluate` can pick.
MODEL_KINDS = ("ensemble", "final", "baseline")


class ArgumentParser(argparse.ArgumentParser):
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


def add_model_arguments(parser):
    """Adds MODEL (a run, an export directory, a .onnx or .keras file) and --model-kind,
    which `predict` and `evaluate` read through `LoadedClassifier`."""
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("--model-kind", choices=MODEL_KINDS, default="ensemble",
                        help="with a run directory: which of its models (default ensemble).")


def add_verbose_argument(parser, progress):
    """Adds `--verbose`; `progress` says whether the command shows training progress."""
    if progress:
        parser.add_argument(
            "--verbose", type=int, choices=(0, 1, 2), default=1,
            help="0 silent; 1 (default) progress: a progress bar on a terminal, one line per "
            "epoch otherwise (a log file, CI); 2 one line per epoch, and TensorFlow's own log "
            "messages.",
        )
    else:
        parser.add_argument(
            "--verbose", type=int, choices=(1, 2), default=1,
            help="2 also shows TensorFlow's own log messages (default 1: hidden).",
        )


def quiet_tensorflow(verbose):
    """Hides TensorFlow's own log messages unless `verbose` is 2.

    Must run before TensorFlow is imported: its C++ runtime reads `TF_CPP_MIN_LOG_LEVEL` once.
    A level the user has set in the environment is kept.
    """
    if verbose >= 2:
        return
    # 2: the C++ runtime's INFO and WARNING lines (CPU instructions, oneDNN, Grappler
    # sessions during export), which say nothing about the user's run.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The Python side: TensorFlow's logger and tf2onnx's conversion notices.
    for name in ("tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # absl's ("WARNING:absl:" lines of SavedModel export) through its own API: a plain
    # `logging.getLogger("absl")` made before absl is imported would replace its logger class.
    try:
        from absl import logging as absl_logging
    except ImportError:  # No TensorFlow, hence no absl: an ONNX-only machine.
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


def fit_verbosity(verbose, stream=None):
    """The Keras `verbose` for `fit` that the command's `--verbose` asks for.

    Keras redraws its progress bar with carriage returns after every batch, even into a file;
    when `stream` (standard output by default) is not a terminal, the default `--verbose 1`
    becomes Keras's 2, one line per epoch.
    """
    stream = sys.stdout if stream is None else stream
    if verbose == 1 and not stream.isatty():
        return 2
    return verbose


def fail_usage(args, message):
    """Exits with status 2 and `message`, as argparse does, from the sub-command's parser."""
    args.parser.error(message)


def _integer_at_least(text, minimum, expected):
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}. Received: {text!r}")
    return value


def positive_int(text):
    return _integer_at_least(text, 1, "a positive integer")


def non_negative_int(text):
    return _integer_at_least(text, 0, "a non-negative integer")


def integer_at_least(minimum, reason):
    """An argparse type: an integer of at least `minimum`; `reason` says why in the error."""
    return lambda text: _integer_at_least(
        text, minimum, f"an integer of at least {minimum} ({reason})"
    )


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # NaN fails the comparison; inf is refused too (a temperature or learning rate of inf
    # gives a constant CLID or a NaN step).
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            f"expected a positive finite number. Received: {text!r}"
        )
    return value


def fraction(text, *, one=False):
    """An argparse type: a number in (0, 1), or in (0, 1] when `one`."""
    from clidmu_tf.validation import check_fraction

    try:
        return check_fraction("fraction", float(text), one=one)
    except ValueError:
        interval = "(0, 1]" if one else "(0, 1)"
        raise argparse.ArgumentTypeError(
            f"expected a number in {interval}. Received: {text!r}"
        ) from None


def labeled_fraction(text):
    return fraction(text, one=True)


def image_size(text):
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


def export_formats(text):
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


# Library argument names and the command-line options that set them, for `cli_spelling`.
LIBRARY_TO_CLI = {
    "meta_size": "--meta-size",
    "meta_batch_size": "--meta-batch-size",
    "batch_size": "--batch-size",
    "train_size": "--limit-train",
    "limit_train": "--limit-train",
    "class_map": "--class-map",
    "image_size": "--image-size",
    "label_file": "--label-file",
    "data_dir": "--data-dir",
    "top_k": "--top-k",
    "selection_size": "--selection-size",
    "labeled_fraction": "--labeled-fraction",
    "snapshot_selection": "--snapshot-selection",
    "learning_rate": "--learning-rate",
    "meta_learning_rate": "--meta-learning-rate",
    "temperature": "--temperature",
    "meta_every": "--meta-every",
    "noise_rate": "--noise",
    "overwrite": "--overwrite",
}
_LIBRARY_NAME = re.compile(
    r"(?<![\w-])(" + "|".join(LIBRARY_TO_CLI) + r")"
    r"(=\((?:h, w|height, width)\)|=True(?![\w-])|(?![\w-]))"
)
# A code span that calls a function (`tfds.builder('mnist', data_dir=...)`) is Python the
# user may run as it is: its argument names stay.
_PYTHON_CALL = re.compile(r"`[^`]*\w\([^`]*`")
# The command line declares a dataset's classes through the .npz's class_names array.
_DECLARE_CLASSES = re.compile(r"pass num_classes=(\d+) \(and class_names\) explicitly")


def cli_spelling(message):
    """`message` with the library's argument names replaced by the options that set them.

    The library names its arguments as Python does (`meta_size=5000`, `overwrite=True`,
    `image_size=(h, w)`); on the command line the user typed `--meta-size 5000`, so errors
    raised by the library are reworded before they are printed.

    Example:

    >>> cli_spelling("Received: meta_size=5000; pass overwrite=True")
    'Received: --meta-size=5000; pass --overwrite'
    """

    def replace(match):
        option = LIBRARY_TO_CLI[match.group(1)]
        return f"{option} HxW" if match.group(2).startswith("=(") else option

    message = _DECLARE_CLASSES.sub(
        r"give the .npz a class_names array of \1 names", str(message)
    )
    pieces, start = [], 0
    for call in _PYTHON_CALL.finditer(message):
        pieces += [_LIBRARY_NAME.sub(replace, message[start : call.start()]), call.group()]
        start = call.end()
    return "".join(pieces + [_LIBRARY_NAME.sub(replace, message[start:])])


def add_data_arguments(parser):
    """Adds the arguments that choose the data and its label noise (`train` and `tune`)."""
    defaults = training_job.DEFAULTS
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
        "--image-size", type=image_size, metavar="HxW",
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
        "--limit-train", type=positive_int, metavar="N",
        help="train on a stratified subset of N training samples (quick runs and smoke tests).",
    )
    parser.add_argument(
        "--labeled-fraction", type=labeled_fraction, metavar="F",
        help="semi-supervised: a stratified fraction F in (0, 1] of the training set keeps its "
        "(noisy) labels; the rest is unlabelled and feeds CLID's meta set (default: every label "
        "is kept).",
    )
    parser.add_argument(
        "--unlabeled-dir", metavar="DIR",
        help="semi-supervised: a folder of unlabelled images (sub-folders too) that join CLID's "
        "meta set, resized to the training images' size and colour.",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, metavar="N", default=defaults["seed"],
        help=f"seeds the noise, the splits, the shuffling and the weights (default "
        f"{defaults['seed']}).",
    )


def check_data_arguments(args, method=None):
    """Checks `--noise`, `--class-map`, `--dataset` and the semi-supervised options.

    Args:
        args: the parsed arguments of `train` or `tune`.
        method: the `--method`, whose meta objective must read no labels when part of the
            data is unlabelled.

    Returns:
        The noise's `(kind, rate)`.
    """
    from clidmu_tf.cli.data_sources import check_dataset_argument

    try:
        kind, rate = training_job.parse_noise(args.noise)
        check_dataset_argument(args.dataset, args.data_dir)
    except ValueError as error:
        fail_usage(args, str(error))
    if args.unlabeled_dir is not None:
        from clidmu_tf.pipelines.datasets import list_image_files

        try:
            list_image_files(args.unlabeled_dir, name="--unlabeled-dir")
        except ValueError as error:
            fail_usage(args, str(error))
        unlabeled, data = (os.path.realpath(path) for path in (args.unlabeled_dir, args.dataset))
        if os.path.isdir(data) and os.path.commonpath([unlabeled, data]) in (unlabeled, data):
            # The folder's test images would join the meta set: training would see them.
            fail_usage(
                args,
                "--unlabeled-dir must not hold or lie inside the --dataset folder: its test "
                "images would join the meta set. Received: "
                f"--unlabeled-dir={args.unlabeled_dir!r}, --dataset={args.dataset!r}",
            )
    if args.class_map is not None and kind != "asymmetric":
        fail_usage(
            args,
            f"--class-map applies to asymmetric noise only. Received: --noise={args.noise!r}",
        )
    semi_supervised = args.unlabeled_dir is not None or args.labeled_fraction not in (None, 1.0)
    if semi_supervised and method is not None:
        meta_objective = training_job.METHODS[method][1]
        if meta_objective not in ("clid", "none"):
            usable = sorted(name for name, (_, objective) in training_job.METHODS.items()
                            if objective in ("clid", "none"))  # fmt: skip
            fail_usage(
                args,
                "--labeled-fraction and --unlabeled-dir feed the meta set with unlabelled "
                f"samples, so the method's meta objective must read no labels: one of {usable}. "
                f"Received: --method={method}",
            )
    return kind, rate
