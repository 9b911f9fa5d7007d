"""`clidmu-tf tune`: a keras-tuner search of CLIDMUModel's hyperparameters, ranked by CLID."""

import json
import os
import sys

from clidmu_tf.cli import cli_utils, training_job

TUNE_METHODS = ("clid-wnet", "clid-vri", "wnet-noisy-meta", "wnet-mae-meta", "ce")
# The keras-tuner project folder inside `tune --out`; its presence means a search to resume.
TUNE_PROJECT = "search"
# The options a search was started with, so that resuming it with others is refused.
SETTINGS_FILE = "search_settings.json"
# Every option that decides the data, the models or the ranking; --max-trials may grow when
# a search is resumed, and --verbose changes nothing.
SEARCH_SETTINGS = (
    "dataset", "data_dir", "image_size", "label_file", "noise", "class_map", "limit_train",
    "seed", "method", "backbone", "objective", "tuner", "epochs", "validation_fraction",
    "virtual_step", "weight_normalization", "batch_size", "labeled_fraction", "unlabeled_dir",
)


def register_subparser(commands):
    """Adds the `tune` sub-command to `commands`, the top parser's sub-parsers."""
    tune = commands.add_parser(
        "tune",
        allow_abbrev=False,
        help="hyperparameter search ranked by CLID on held-out noisy data",
        description="Search CLIDMUModel's hyperparameters with keras-tuner. Trials are ranked by "
        "--objective; the default, val_clid, reads no labels. A fraction of the noisy training "
        "set is held out for validation; when the noise was injected its true labels are "
        "logged as val_clean_accuracy for reference.",
    )
    tune.set_defaults(handler=run, parser=tune)
    cli_utils.add_data_arguments(tune)
    tune.add_argument("--method", choices=TUNE_METHODS, default="clid-wnet",
                      help="the method whose hyperparameters are searched (default clid-wnet).")
    tune.add_argument("--backbone", nargs="+", default=["mlp"],
                      choices=[name for name in training_job.BACKBONES if name != "auto"],
                      help="one or more backbones to search over (default mlp).")
    tune.add_argument(
        "--virtual-step", choices=("full", "head"), default="full",
        help="full (default, the paper's) or head: the cheaper head-only virtual step, for "
        "every trial (as train --virtual-step; refused with --method ce, which has no meta "
        "update).",
    )
    tune.add_argument(
        "--weight-normalization", choices=("batch", "class"), default=None,
        help="as train --weight-normalization, for every trial (default: the library's).",
    )
    tune.add_argument("--objective", default="val_clid",
                      choices=["val_clid", "val_loss", "val_accuracy", "val_clean_loss",
                               "val_clean_accuracy"],
                      help="what ranks the trials (default val_clid, label-free).")
    tune.add_argument("--tuner", choices=("random", "bayesian"), default="random")
    tune.add_argument("--max-trials", type=cli_utils.positive_int, default=10, metavar="N")
    tune.add_argument("--epochs", type=cli_utils.positive_int, default=10, metavar="N",
                      help="epochs per trial (default 10).")
    tune.add_argument(
        "--batch-size", type=cli_utils.positive_int, metavar="N",
        help="the batch size of every trial (default: searched among 32, 64, 100, 128, 256 "
        "for data held in memory; 100, the search's default, for an image folder or a tfds "
        "dataset streamed from disk, whose batches are fixed when the stream is built).",
    )
    tune.add_argument("--validation-fraction", type=cli_utils.fraction, metavar="F", default=0.2,
                      help="share of the noisy training set held out (default 0.2).")
    tune.add_argument("--out", required=True, metavar="DIR",
                      help="the search directory (keras-tuner files and summary.json).")
    tune.add_argument("--overwrite", action="store_true",
                      help="start afresh instead of resuming the search in --out.")
    cli_utils.add_verbose_argument(tune, progress=True)


def run(args):
    """Runs (or resumes) the search, writes summary.json, prints the trials; returns 0, or
    `EXIT_FAILED` when no trial completed.

    Data held in memory (arrays, the offline sets) reaches the search as arrays. A dataset
    streamed from disk (an image folder, a tfds image dataset) reaches it as a `tf.data`
    stream of `(x, y)` batches of `--batch-size`, shuffled each epoch and decoded as it is
    read; each trial draws its meta set in one pass over it, keeping only the meta set. Held
    in memory all the same, decoded: the validation split (`--validation-fraction` of the
    training pool, scored after every epoch) and, with `--labeled-fraction` or
    `--unlabeled-dir`, a seeded uniform subset of the unlabelled samples as large as the
    largest meta set a trial can draw (`META_SIZES`, 2000), from which each trial draws its
    own.
    """
    import numpy as np

    from clidmu_tf.cli.data_sources import load_source_dataset, load_unlabeled_like
    from clidmu_tf.pipelines.splits import labeled_split, stratified_split

    noise_kind, noise_rate = cli_utils.check_data_arguments(args, method=args.method)
    try:
        training_job.check_method_options(
            args.method, args.virtual_step, args.weight_normalization
        )
    except ValueError as error:
        cli_utils.fail_usage(args, str(error))
    if os.path.isfile(args.out):
        cli_utils.fail_usage(
            args, f"--out must be a directory. Received: --out={args.out!r}, a file"
        )
    if (
        os.path.isdir(args.out)
        and os.listdir(args.out)
        and not os.path.isdir(os.path.join(args.out, TUNE_PROJECT))
    ):
        cli_utils.fail_usage(
            args,
            f"--out {args.out!r} is not empty and holds no search to resume or overwrite; "
            "choose another directory.",
        )
    settings = json.loads(json.dumps({key: getattr(args, key) for key in SEARCH_SETTINGS}))
    # What it comes to, so that a search cannot be continued under a later default.
    settings["weight_normalization"] = training_job.resolved_weight_normalization(
        args.method, args.weight_normalization
    )
    if not args.overwrite:
        _check_same_search(args, settings)
    import keras_tuner

    from clidmu_tf.pipelines import StreamedDataset
    from clidmu_tf.pipelines.streams import input_stream
    from clidmu_tf.tuning import run_search
    from clidmu_tf.tuning.clidmu_hyper_model import DEFAULT_BATCH_SIZE, META_SIZES

    dataset = load_source_dataset(
        args.dataset, data_dir=args.data_dir, image_size=args.image_size, label_file=args.label_file
    )
    streamed = isinstance(dataset, StreamedDataset)
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
    # Semi-supervised: the training samples beyond the labelled fraction and the images of
    # --unlabeled-dir lose (or never had) labels and form the meta set's pool.
    semi_supervised = args.labeled_fraction not in (None, 1.0)
    unlabeled_indices = np.zeros(0, np.int64)
    if semi_supervised:
        kept, rest = labeled_split(clean[train], args.labeled_fraction, seed=args.seed)
        unlabeled_indices = train[rest]
        train = train[kept]
    images = None
    if args.unlabeled_dir is not None:
        images = load_unlabeled_like(dataset, args.unlabeled_dir, args.dataset)
    if streamed:
        unlabeled_indices, images = _meta_pool(
            unlabeled_indices, images, size=max(META_SIZES), seed=args.seed
        )
    unlabeled = []
    if semi_supervised:
        unlabeled.append(dataset.inputs(unlabeled_indices))
    if images is not None:
        unlabeled.append(images.astype(np.float32) * np.float32(dataset.pixel_scale))
    hyperparameters = keras_tuner.HyperParameters()
    batch_size = args.batch_size
    if streamed:
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        x_train = input_stream(
            dataset, train, batch_size=batch_size, labels=given, shuffle_seed=args.seed
        )
        y_train = None
    else:
        x_train, y_train = dataset.inputs(train), given[train]
    if batch_size is not None:
        hyperparameters.Fixed("batch_size", batch_size)
    noise_known = noise_kind is not None or dataset.y_train_clean is not None
    meta_model, meta_objective = training_job.METHODS[args.method]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, SETTINGS_FILE), "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=2)
    _, summary = run_search(
        x_train,
        y_train,
        dataset.inputs(validation),
        given[validation],
        y_val_clean=clean[validation] if noise_known else None,
        x_unlabeled=np.concatenate(unlabeled) if unlabeled else None,
        num_classes=dataset.num_classes,
        objective=args.objective,
        hyperparameters=hyperparameters,
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
        verbose=cli_utils.fit_verbosity(args.verbose),
        virtual_step=args.virtual_step,
        weight_normalization=args.weight_normalization,
    )
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    print(trials_table(summary))
    if summary["best"] is None:
        # Every trial failed (their errors are above): a script must not read success.
        print(
            f"{cli_utils.PROG} tune: error: no trial completed, so there is no best "
            "hyperparameter set; see the trials' errors above.",
            file=sys.stderr,
        )
        return cli_utils.EXIT_FAILED
    return 0


def _meta_pool(indices, images, *, size, seed):
    """At most `size` of the unlabelled samples, a seeded uniform subset.

    The pool is the training samples at `indices` followed by the `images` of
    `--unlabeled-dir` (or None); the subset keeps the order of each part. A trial's meta set,
    a uniform subset of this subset, is then a uniform subset of the whole pool.

    Returns:
        `(indices, images)`, each cut to the chosen samples (as they are when the pool holds
        at most `size`).
    """
    import numpy as np

    num_images = 0 if images is None else len(images)
    pool = len(indices) + num_images
    if pool <= size:
        return indices, images
    chosen = np.sort(np.random.default_rng(seed).choice(pool, size, replace=False))
    from_indices = chosen[chosen < len(indices)]
    from_images = chosen[chosen >= len(indices)] - len(indices)
    return indices[from_indices], None if images is None else images[from_images]


def _check_same_search(args, settings):
    """Refuses to resume a search in --out that was started with other options."""
    if not os.path.isdir(os.path.join(args.out, TUNE_PROJECT)):
        return
    path = os.path.join(args.out, SETTINGS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            earlier = json.load(handle)
    except (OSError, ValueError):
        cli_utils.fail_usage(
            args,
            f"--out {args.out!r} holds a search whose options are not recorded ({SETTINGS_FILE} "
            "is missing or unreadable), so it cannot be resumed safely. Pass --overwrite to "
            "start afresh, or choose another --out.",
        )
    if "weight_normalization" not in earlier and earlier.get("method") in training_job.METHODS:
        # Started before the option existed: Meta-Weight-Net's weights were normalised over
        # the batch (the authors' way).
        earlier["weight_normalization"] = training_job.resolved_weight_normalization(
            earlier["method"], None, default="batch"
        )
    differing = [key for key in SEARCH_SETTINGS if earlier.get(key) != settings[key]]
    if differing:
        details = ", ".join(
            f"--{key.replace('_', '-')} {earlier.get(key)!r} then, {settings[key]!r} now"
            for key in differing
        )
        cli_utils.fail_usage(
            args,
            f"--out {args.out!r} holds a search started with other options ({details}); "
            "resuming it would rank trials of two settings together. Pass --overwrite to start "
            "afresh, or choose another --out.",
        )


def trials_table(summary):
    """The table of trials printed at the end of `tune`, from the search summary."""
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
