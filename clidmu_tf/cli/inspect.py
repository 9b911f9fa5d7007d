"""`clidmu-tf inspect`: the training samples whose labels are most likely wrong, as CSV."""

import sys

from clidmu_tf.cli import cli_utils, training_job
from clidmu_tf.cli.run_directory import RunDirectory
from clidmu_tf.label_issue_ranking import DEFAULT_SCORE, SCORES


def register_subparser(commands):
    """Adds the `inspect` sub-command to `commands`, the top parser's sub-parsers."""
    inspect = commands.add_parser(
        "inspect",
        allow_abbrev=False,
        help="the training samples whose labels are most likely wrong (label issues)",
        description="Rank a run's training samples by how likely their given label is wrong, "
        "from what training recorded (no extra training; clidmu_tf.label_issues), most "
        "suspicious first, as CSV: rank, index (position in the dataset's training split), "
        "the final meta-model's weight, given label, the snapshot ensemble's prediction and "
        "confidence, label_quality (the --score, lower meaning more likely wrong), when the "
        "noise was injected the true label, and held_out (1 for the samples of the held-out "
        "selection set of train --snapshot-selection held-out, never trained on, else 0), "
        "and for an image folder the image's file inside it. "
        "The estimate of how many labels are wrong (the largest of cleanlab's "
        "confident-learning counts on the class probabilities of each of the first third of "
        "the epochs), a suggested cut-off, is printed to stderr.",
    )
    inspect.set_defaults(handler=run, parser=inspect)
    inspect.add_argument("run_dir", metavar="RUN_DIR")
    inspect.add_argument(
        "--score", choices=list(SCORES), default=DEFAULT_SCORE,
        help=f"what ranks the samples (default {DEFAULT_SCORE}): "
        + "; ".join(f"{name}: {text}" for name, text in SCORES.items())
        + ". See BENCHMARKS.md, 'Finding wrong labels'.",
    )
    inspect.add_argument("--top", type=cli_utils.positive_int, metavar="N", default=50,
                         help="how many samples to list (default 50).")
    inspect.add_argument("--all", action="store_true", help="list every training sample.")
    inspect.add_argument("--output", metavar="CSV", help="write here instead of to stdout.")
    cli_utils.add_verbose_argument(inspect, progress=False)


def run(args):
    """Ranks the run's training samples and writes them as CSV; returns the exit status."""
    from clidmu_tf.cli.label_errors import rank_label_errors, write_label_errors_csv
    from clidmu_tf.label_issue_ranking import label_issues

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
    # The run's training samples are streamed in its training batches, as training read them.
    issues = label_issues(
        args.run_dir, score=args.score, batch_size=report["config"]["batch_size"]
    )
    noise_known = report.get("noise", {}).get("kind") not in (None, "none")
    rows = rank_label_errors(
        issues,
        labels["given"],
        indices=labels["indices"],
        true=labels["true"] if noise_known else None,
        class_names=report["data"].get("class_names"),
        top=None if args.all else args.top,
        held_out=labels["held_out"],
        files=labels.get("files"),
    )
    write_label_errors_csv(args.output or sys.stdout, rows)
    print(suggestion_sentence(issues["num_issues"], len(labels["given"])), file=sys.stderr)
    return 0


def suggestion_sentence(num_issues, num_samples):
    """What `inspect` says of the suggested number of wrong labels (`num_issues`, or None)."""
    if num_issues is None:
        return (
            "No suggested number of wrong labels: the run's training dynamics hold no "
            "per-epoch counts of label issues (they were recorded by an older clidmu-tf)."
        )
    return (
        f"cleanlab estimates, from the class probabilities of the early epochs, that "
        f"{num_issues} of the {num_samples} training labels are wrong: a suggested cut-off "
        f"of this ranking (--top {num_issues})."
    )
