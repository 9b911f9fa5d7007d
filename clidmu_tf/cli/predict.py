"""`clidmu-tf predict`: the classes of a numpy file, an image or a folder of images, as CSV."""

import csv
import sys

from clidmu_tf.cli import cli_utils


def register_subparser(commands):
    """Adds the `predict` sub-command to `commands`, the top parser's sub-parsers."""
    predict = commands.add_parser(
        "predict",
        allow_abbrev=False,
        help="predict classes of a numpy file, an image or a folder of images",
        description="Predict with MODEL: a run directory, an export directory, a .onnx or "
        ".keras file. INPUT: a .npy/.npz array [N, ...] (uint8 is divided by 255), an image "
        "file, or a folder of images (resized to the model's input). Writes CSV.",
    )
    predict.set_defaults(handler=run, parser=predict)
    cli_utils.add_model_arguments(predict)
    predict.add_argument("input", metavar="INPUT")
    predict.add_argument("--output", metavar="CSV", help="write here instead of to stdout.")
    predict.add_argument("--batch-size", type=cli_utils.positive_int, default=256, metavar="N")
    cli_utils.add_verbose_argument(predict, progress=False)


def run(args):
    """Predicts and writes one CSV row per input; returns the exit status."""
    from clidmu_tf.cli.input_files import check_inputs_path, read_inputs
    from clidmu_tf.cli.loaded_classifier import LoadedClassifier

    check_inputs_path(args.input)
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
    handle = open(path, "w", newline="", encoding="utf-8") if path else sys.stdout
    try:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if path:
            handle.close()
