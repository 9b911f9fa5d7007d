"""`clidmu-tf inspect`: the training samples the meta-model trusts least, as CSV."""

import sys

from clidmu_tf.cli import cli_utils, training_job
from clidmu_tf.cli.run_directory import RunDirectory


def register_subparser(commands):
    """Adds the `inspect` sub-command to `commands`, the top parser's sub-parsers."""
    inspect = commands.add_parser(
        "inspect",
        allow_abbrev=False,
        help="the training samples the meta-model trusts least (likely label errors)",
        description="Rank a run's training samples by the meta-model's trust in their label "
        "(model.per_sample_weights), least trusted first, as CSV: rank, index (position in the "
        "dataset's training split), weight, given label, the model's prediction and confidence, "
        "and, when the noise was injected, the true label.",
    )
    inspect.set_defaults(handler=run, parser=inspect)
    inspect.add_argument("run_dir", metavar="RUN_DIR")
    inspect.add_argument("--top", type=cli_utils.positive_int, metavar="N", default=50,
                         help="how many samples to list (default 50).")
    inspect.add_argument("--all", action="store_true", help="list every training sample.")
    inspect.add_argument("--output", metavar="CSV", help="write here instead of to stdout.")
    cli_utils.add_verbose_argument(inspect, progress=False)


def run(args):
    """Ranks the run's training samples and writes them as CSV; returns the exit status."""
    from clidmu_tf.cli.label_errors import (
        rank_label_errors,
        score_samples,
        write_label_errors_csv,
    )

    run_directory = RunDirectory(args.run_dir)
    report = run_directory.report()
    method = report["config"]["method"]
    if training_job.METHODS[method][1] == "none":
        raise ValueError(
            f"The run in {args.run_dir!r} trained with --method {method}, which learns no "
            "meta-model, so it has no per-sample trust to rank. Inspect a run of a meta method "
            f"({', '.join(m for m in sorted(training_job.METHODS) if m != 'ce')})."
        )
    labels = run_directory.training_labels()
    dataset = run_directory.load_dataset()
    model = run_directory.load_model("final")
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
