"""`clidmu-tf evaluate`: accuracy, loss and confusion of a model on a labelled test set."""

import json

from clidmu_tf.cli import cli_utils
from clidmu_tf.cli.run_directory import RunDirectory


def register_subparser(commands):
    """Adds the `evaluate` sub-command to `commands`, the top parser's sub-parsers."""
    evaluate = commands.add_parser(
        "evaluate",
        allow_abbrev=False,
        help="accuracy and loss of a model on a labelled test set",
        description="Evaluate MODEL (a run directory, an export directory, a .onnx or .keras "
        "file) on the test split of --dataset (default: the run's dataset), or on --inputs "
        "with --labels. Prints JSON.",
    )
    evaluate.set_defaults(handler=run, parser=evaluate)
    cli_utils.add_model_arguments(evaluate)
    evaluate.add_argument("--dataset", metavar="DATASET",
                          help="a --dataset value as for train (see train --help).")
    evaluate.add_argument("--data-dir", metavar="DIR", help="the tfds data directory.")
    evaluate.add_argument("--image-size", type=cli_utils.image_size, metavar="HxW")
    evaluate.add_argument("--inputs", metavar="FILE", help="a .npy/.npz of inputs.")
    evaluate.add_argument("--labels", metavar="FILE",
                          help="a .npy of integer labels, or an .npz holding them as y.")
    evaluate.add_argument("--output", metavar="JSON", help="also write the result here.")
    evaluate.add_argument("--batch-size", type=cli_utils.positive_int, default=256, metavar="N")
    cli_utils.add_verbose_argument(evaluate, progress=False)


def run(args):
    """Evaluates and prints the result as JSON; returns the exit status."""
    import numpy as np

    from clidmu_tf.cli.data_sources import check_dataset_argument, load_source_dataset
    from clidmu_tf.cli.input_files import read_array, read_inputs
    from clidmu_tf.cli.loaded_classifier import LoadedClassifier
    from clidmu_tf.validation import check_class_ids

    if (args.inputs is None) != (args.labels is None):
        cli_utils.fail_usage(args, "pass both --inputs and --labels, or neither.")
    if args.inputs is not None and args.dataset is not None:
        cli_utils.fail_usage(args, "pass either --dataset or --inputs/--labels, not both.")
    if args.dataset is not None:
        try:
            check_dataset_argument(args.dataset, args.data_dir)
        except ValueError as error:
            cli_utils.fail_usage(args, str(error))
    elif args.inputs is None and not RunDirectory(args.model).is_run:
        cli_utils.fail_usage(
            args, "MODEL is not a run directory: pass --dataset or --inputs/--labels."
        )
    classifier = LoadedClassifier(args.model, model_kind=args.model_kind)
    if args.inputs is not None:
        # The reader `predict` uses: the same scaling (uint8 / 255) and the same checks.
        _, x = read_inputs(args.inputs, classifier.input_shape)
        y = check_class_ids(read_array(args.labels, key="y"), "--labels", length=len(x))
        source = args.inputs
    else:
        if args.dataset is None:
            dataset = classifier.run.load_dataset()
        else:
            dataset = load_source_dataset(
                args.dataset, data_dir=args.data_dir, image_size=args.image_size
            )
        from clidmu_tf.pipelines.streams import input_stream

        # Read a batch at a time: a streamed dataset's images are decoded as they are scored.
        x = input_stream(
            dataset, np.arange(len(dataset.y_test)), batch_size=args.batch_size, split="test"
        )
        y = dataset.y_test
        source = f"{dataset.name} (test split)"
    probabilities = classifier.predict_proba(x, batch_size=args.batch_size)
    # Labels beyond the model's classes: a --labels file or a --dataset of other classes.
    y = check_class_ids(
        y, "--labels" if args.inputs else "y_test", num_classes=probabilities.shape[1]
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
