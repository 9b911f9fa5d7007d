"""`clidmu-tf export`: a finished run's model to SavedModel and ONNX, verified."""

import json
import sys

from clidmu_tf.cli import cli_utils, training_job
from clidmu_tf.cli.run_directory import RunDirectory


def register_subparser(commands):
    """Adds the `export` sub-command to `commands`, the top parser's sub-parsers."""
    export = commands.add_parser(
        "export",
        allow_abbrev=False,
        help="export a run's snapshot ensemble to SavedModel and ONNX, verified",
        description="Export a finished run's CLID snapshot ensemble (or its final or baseline "
        "model) to SavedModel and ONNX, verify both against Keras on the test split, and write "
        "model_card.json. The snapshots of a run that did not finish (killed, failed or "
        "diverged) can be exported too, with a warning.",
    )
    export.set_defaults(handler=run, parser=export)
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--out", metavar="DIR", help="export directory (default RUN_DIR/export).")
    export.add_argument("--model", choices=cli_utils.MODEL_KINDS, default="ensemble",
                        help="which model of the run to export (default ensemble).")
    export.add_argument("--formats", type=cli_utils.export_formats,
                        default=list(training_job.EXPORT_FORMATS), metavar="FORMATS",
                        help="comma-separated subset of saved_model,onnx (default both).")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing export directory.")
    cli_utils.add_verbose_argument(export, progress=False)


def run(args):
    """Exports the run's model and prints the verification; returns the exit status."""
    if not args.formats:
        cli_utils.fail_usage(args, "--formats must name at least one of saved_model, onnx.")
    run_directory = RunDirectory(args.run_dir)
    # The snapshots of an unfinished run are whole epochs, kept as they were scored; its
    # final and baseline models are not results.
    report = run_directory.report(allow_unfinished=args.model == "ensemble")
    out = args.out or run_directory.export
    if report["status"] not in ("completed", "interrupted"):
        print(
            f"Warning: the run in {args.run_dir!r} did not finish (status {report['status']!r}); "
            "exporting the snapshots it kept. Its test accuracy is not known.",
            file=sys.stderr,
        )
    # TensorFlow loads here, once the arguments have been checked.
    import numpy as np

    from clidmu_tf.callbacks import read_snapshot_manifest
    from clidmu_tf.export import export_ensemble

    model = run_directory.load_model(args.model)
    dataset = run_directory.load_dataset(allow_unfinished=True)
    members, monitor = None, "meta_clid"
    if args.model == "ensemble":
        manifest = read_snapshot_manifest(run_directory.snapshots)
        members, monitor = manifest["snapshots"], manifest.get("monitor", "meta_clid")
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
        selection_monitor=monitor,
        verification_inputs=training_job.verification_inputs(dataset),
        overwrite=args.overwrite,
    )
    verification = card.get("verification")
    formats = ", ".join(args.formats)
    print(f"Exported the {args.model} model of {args.run_dir} to {out} ({formats}).")
    if verification is not None:
        print(json.dumps(verification, indent=2, default=lambda value: np.asarray(value).tolist()))
    return 0
