"""What the `clidmu-tf` sub-commands share: the parser class, argument types, the data
arguments of `train` and `tune`, and the exit statuses."""

import argparse
import difflib

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


def fail_usage(args, message):
    """Exits with status 2 and `message`, as argparse does, from the sub-command's parser."""
    args.parser.error(message)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer. Received: {text!r}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer. Received: {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number. Received: {text!r}")
    return value


def fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1). Received: {text!r}")
    return value


def labeled_fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1]. Received: {text!r}")
    return value


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
