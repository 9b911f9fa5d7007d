"""`clidmu-tf train`: train CLID-MU and a baseline, keep the snapshot ensemble, export it."""

import shutil
import tempfile

from clidmu_tf.cli import cli_utils, cluster, training_job
from clidmu_tf.cli.cli_utils import positive_float, positive_int
from clidmu_tf.cli.run_directory import RunDirectory


def register_subparser(commands):
    """Adds the `train` sub-command to `commands`, the top parser's sub-parsers."""
    defaults = training_job.DEFAULTS
    train = commands.add_parser(
        "train", allow_abbrev=False,
        help="train CLID-MU and a cross-entropy baseline, build and export the snapshot ensemble",
        description="Inject label noise, train CLID-MU and a plain cross-entropy baseline on the "
        "same data, keep the CLID snapshot ensemble, export it (SavedModel and ONNX, verified), "
        "draw the plots and write report.json. With no options it runs offline on scikit-learn's "
        "digits in a few minutes on two CPU cores. Ctrl-C stops training, keeps the snapshots "
        "saved so far and still writes the report (status 'interrupted').",
    )
    train.set_defaults(handler=run, parser=train)
    cli_utils.add_data_arguments(train)
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
    train.add_argument("--epochs", type=positive_int, metavar="N", default=defaults["epochs"],
                       help=f"training epochs (default {defaults['epochs']}).")
    train.add_argument("--batch-size", type=positive_int, metavar="N",
                       default=defaults["batch_size"],
                       help=f"training batch size (default {defaults['batch_size']}).")
    train.add_argument(
        "--meta-size", type=positive_int, metavar="N",
        help="size of the meta set drawn from the noisy training data (default: a fifth of the "
        "training set, at most 1000 as in the paper).",
    )
    train.add_argument("--meta-batch-size", type=positive_int, metavar="N",
                       help="meta batch size (default: the training batch size).")
    train.add_argument("--temperature", type=positive_float, metavar="TAU",
                       default=defaults["temperature"],
                       help=f"CLID's temperature (default {defaults['temperature']}).")
    train.add_argument(
        "--meta-every", type=positive_int, metavar="N", default=defaults["meta_every"],
        help="update the meta-model every N steps (default 1).",
    )
    train.add_argument(
        "--virtual-step", choices=("full", "head"), default=defaults["virtual_step"],
        help="full (default, the paper's): the virtual step updates every classifier weight; "
        "head: only the last (logits) layer, with the features held fixed, a step that costs "
        "little more than a plain one (see BENCHMARKS.md). Refused with --method ce, which has "
        "no meta update; the cross-entropy baseline trains without one whatever it says.",
    )
    train.add_argument(
        "--weight-normalization", choices=("batch", "class"),
        default=defaults["weight_normalization"],
        help="how Meta-Weight-Net's sample weights are scaled to sum to 1: batch (the "
        "paper's) over the batch; class: within each (given) class, to the class's share "
        "of the batch, so that no class can be weighted down as a whole (see BENCHMARKS.md, "
        "'Class collapse'). Default: the library's, class. Refused with the methods "
        "without sample weights (ce and the VRI ones).",
    )
    train.add_argument("--learning-rate", type=positive_float, metavar="LR",
                       default=defaults["learning_rate"],
                       help=f"classifier SGD learning rate (default {defaults['learning_rate']}).")
    train.add_argument("--lr-schedule", choices=training_job.LR_SCHEDULES,
                       default=defaults["lr_schedule"],
                       help="cosine (default, down to 2%% of the rate) or constant.")
    train.add_argument(
        "--meta-learning-rate", type=positive_float, metavar="LR",
        default=defaults["meta_learning_rate"],
        # Not read from the library here: the command line imports TensorFlow only when
        # work starts. test_cli checks that this text states the library's default.
        help="meta-model learning rate (default: the library's default_meta_optimizer, 1e-3 "
        "with Adam for Meta-Weight-Net, 1e-2 with Adam for VRI).",
    )
    train.add_argument("--top-k", type=positive_int, metavar="K", default=defaults["top_k"],
                       help="epochs kept in the CLID snapshot ensemble (default 5).")
    train.add_argument(
        "--snapshot-selection", choices=training_job.SNAPSHOT_SELECTIONS,
        default=defaults["snapshot_selection"],
        help="meta-set (default, the paper's rule): rank the epochs by CLID on the meta set; "
        "held-out: by CLID on a selection set of samples left out of training (their labels "
        "unread), which memorised labels cannot fool, at the cost of training on fewer "
        "samples (see BENCHMARKS.md, 'Memorisation and selection'); with --labeled-fraction "
        "or --unlabeled-dir it is drawn from the unlabelled samples outside the meta set, at "
        "no such cost.",
    )
    train.add_argument(
        "--selection-size", type=positive_int, metavar="N",
        help="size of the held-out selection set (default: a tenth of the training set, at "
        "most 500).",
    )
    from clidmu_tf.pipelines import Augmentation

    train.add_argument(
        "--augment", choices=["auto", *sorted(Augmentation.RECIPES)], default=defaults["augment"],
        help="training augmentation; auto (default) uses the dataset's usual recipe (1-pixel "
        "shifts for digits, flip and crop for CIFAR), none with the mlp backbone.",
    )
    train.add_argument("--out", required=True, metavar="DIR",
                       help="the run directory to write (must be new or empty).")
    train.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier run in --out (only the files a run writes; the earlier run is "
        "put back if the new one fails).",
    )
    train.add_argument(
        "--resume", action="store_true",
        help="continue the unfinished run in --out (killed, or failed) from its last completed "
        "epoch; give the same options as the command that started it (an option given at the "
        "value its default came to, such as --selection-size, counts as the same). A refused "
        "resume changes nothing; a failed one is marked failed and can be resumed again.",
    )
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
        "--export-formats", type=cli_utils.export_formats, default=defaults["export_formats"],
        metavar="FORMATS",
        help="comma-separated subset of saved_model,onnx (default both), or none.",
    )
    cli_utils.add_verbose_argument(train, progress=True)


def run(args):
    """Checks the arguments, trains, and prints the comparison; returns the exit status."""
    cli_utils.check_data_arguments(args, method=args.method)
    try:
        training_job.check_method_options(
            args.method, args.virtual_step, args.weight_normalization
        )
    except ValueError as error:
        cli_utils.fail_usage(args, str(error))
    if args.overwrite and args.resume:
        cli_utils.fail_usage(args, "pass either --overwrite (start afresh) or --resume, not both.")
    chief = True
    if args.distribute == "multiworker":
        try:
            chief = cluster.is_chief(cluster.read_tf_config())
        except ValueError as error:
            cli_utils.fail_usage(args, str(error))
        if args.resume:
            # Only the chief keeps a run directory, so the other workers would start
            # afresh while the chief continues: their steps would not match.
            cli_utils.fail_usage(
                args, "--resume is not available with --distribute multiworker."
            )
    if chief:
        try:
            RunDirectory(args.out).check_writable(args.overwrite, args.resume)
        except ValueError as error:
            cli_utils.fail_usage(args, str(error))
    meta_batch_size = args.meta_batch_size or args.batch_size
    if meta_batch_size < 2:
        option = "--meta-batch-size" if args.meta_batch_size else "--batch-size"
        cli_utils.fail_usage(
            args,
            f"CLID compares the samples of a meta batch with each other and needs at least 2 "
            f"per batch (the meta batch size defaults to --batch-size). Received: "
            f"{option}={meta_batch_size}",
        )
    config = {key: getattr(args, key) for key in training_job.DEFAULTS}
    if not chief:
        return _run_as_worker(config, args)
    try:
        # The job checks how the options combine, before anything is written.
        job = training_job.TrainingJob(
            config,
            args.out,
            overwrite=args.overwrite,
            verbose=cli_utils.fit_verbosity(args.verbose),
            resume=args.resume,
        )
    except ValueError as error:
        cli_utils.fail_usage(args, cli_utils.cli_spelling(str(error)))
    status = job.run()
    print(comparison_table(job.report.data, args.out))
    return cli_utils.EXIT_INTERRUPTED if status == "interrupted" else 0


def _run_as_worker(config, args):
    """A worker other than the chief: the same job, written to a temporary folder then removed.

    Every worker runs every stage, since each step, evaluation and prediction is a collective
    operation; only the chief's run directory is kept (Keras's multi-worker saving rule).
    """
    scratch = tempfile.mkdtemp(prefix="clidmu-tf-worker-")
    try:
        job = training_job.TrainingJob(
            config, scratch, verbose=cli_utils.fit_verbosity(args.verbose)
        )
        status = job.run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Status: {status}. This worker is not the chief: the chief writes {args.out}.")
    return cli_utils.EXIT_INTERRUPTED if status == "interrupted" else 0


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

    def which_epoch(name):
        # A model stopped by Ctrl-C is part-way through an epoch; say which.
        record = report.get(name) or {}
        if "stopped_in_epoch" in record:
            return f"stopped in epoch {record['stopped_in_epoch']} of {config['epochs']}"
        return f"epoch {len(record.get('epochs', []))}, last"

    if "baseline_test_accuracy" in report:
        row(f"cross-entropy baseline ({which_epoch('baseline')})", report["baseline_test_accuracy"])
    row(f"{config['method']} ({which_epoch('method')})", report.get("test_accuracy"))
    ensemble = report.get("ensemble") or {}
    if "lowest_clid_epoch" in ensemble:
        row(f"{config['method']} (epoch {ensemble['lowest_clid_epoch']}, lowest CLID)",
            ensemble.get("lowest_clid_epoch_test_accuracy"))
    members = len(ensemble.get("members", []))
    row(f"{config['method']} CLID snapshot ensemble (top {members})",
        report.get("ensemble_test_accuracy"))
    issues = report.get("label_issues")
    lines.append("-" * 60)
    if issues:
        lines.append(
            f"Label issues ranked by {issues['score']} (clidmu-tf inspect): cleanlab, on the "
            f"early epochs' probabilities, suggests {issues['suggested_num_issues']} of the "
            f"{issues['num_samples']} labels are wrong."
        )
        if "roc_auc" in issues:
            lines.append(
                f"Finding the {issues['num_flipped']} flipped labels: ROC AUC "
                f"{issues['roc_auc']:.3f}, precision {issues['precision_at_noise_count']:.3f} "
                f"among the {issues['num_flipped']} ranked first."
            )
            lines.append(
                "ROC AUC of each inspect --score: "
                + ", ".join(
                    f"{name} {scores['roc_auc']:.3f}"
                    for name, scores in issues["every_score"].items()
                )
                + "."
            )
    timings = report.get("timings", {})
    lines.append(
        f"Status: {report['status']}, {timings.get('total', 0.0):.0f} s. Run directory: {run_dir}"
    )
    return "\n".join(lines)
