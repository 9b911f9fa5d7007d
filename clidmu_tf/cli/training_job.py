"""The `clidmu-tf train` job: CLID-MU and a cross-entropy baseline on the same noisy data,
the CLID snapshot ensemble, its export, the plots and the report."""

import json
import os
import shutil
import sys
import time
import traceback

import numpy as np

from clidmu_tf.cli.run_directory import RunDirectory, load_keras_file, training_files
from clidmu_tf.cli.run_report import RunReport
from clidmu_tf.validation import (
    DEFAULT_WEIGHT_NORMALIZATION,
    check_bool,
    check_meta_batch_size,
    check_virtual_step,
    check_weight_normalization,
    resolve_weight_normalization,
)

# Each method is a meta-model and a meta objective of `CLIDMUModel`.
METHODS = {
    "clid-wnet": ("wnet", "clid"),
    "clid-vri": ("vri", "clid"),
    "ce": ("wnet", "none"),
    "wnet-clean-meta": ("wnet", "ce_clean"),
    "wnet-noisy-meta": ("wnet", "ce_noisy"),
    "wnet-mae-meta": ("wnet", "mae_noisy"),
    "vri-clean-meta": ("vri", "ce_clean"),
    "vri-noisy-meta": ("vri", "ce_noisy"),
}
BASELINES = ("ce", "none")
BACKBONES = ("auto", "mlp", "small_cnn", "resnet32", "preact_resnet18", "wide_resnet")
DISTRIBUTIONS = ("none", "mirrored", "multiworker")
EXPORT_FORMATS = ("saved_model", "onnx")
LR_SCHEDULES = ("cosine", "constant")
CLASS_MAPS = ("mnist", "cifar10")
SNAPSHOT_SELECTIONS = ("held-out", "meta-set")

# Chosen so that the whole default job (both trainings, the ensemble and its export) runs in
# a few minutes on two CPU cores; see the README.
DEFAULTS = {
    "dataset": "digits",
    "data_dir": None,
    "image_size": None,
    "label_file": None,
    "noise": "instance:0.4",
    "class_map": None,
    "method": "clid-wnet",
    "baseline": "ce",
    "backbone": "auto",
    "epochs": 30,
    "batch_size": 64,
    "meta_size": None,
    "meta_batch_size": None,
    "temperature": 0.5,
    "meta_every": 1,
    "virtual_step": "full",
    # None: the library's default for the method's meta-model (`CLIDMUModel`).
    "weight_normalization": None,
    "learning_rate": 0.05,
    "lr_schedule": "cosine",
    # None: the library's default meta optimiser (`default_meta_optimizer`).
    "meta_learning_rate": None,
    "top_k": 5,
    # meta-set: the paper's rule; held-out: rank the snapshots by CLID on a selection set left
    # out of training (see BENCHMARKS.md, "Memorisation and selection").
    "snapshot_selection": "meta-set",
    "selection_size": None,
    "augment": "auto",
    "seed": 0,
    "distribute": "none",
    "jit": False,
    "export_formats": list(EXPORT_FORMATS),
    "limit_train": None,
    "labeled_fraction": None,
    "unlabeled_dir": None,
}
# The options whose default is resolved when the run starts, from the data, the backbone or
# the library: `--resume` compares what they came to, not how they were spelt.
RESOLVED_OPTIONS = (
    "backbone", "augment", "meta_size", "meta_batch_size", "selection_size",
    "meta_learning_rate", "labeled_fraction", "class_map", "limit_train", "image_size",
    "weight_normalization",
)  # fmt: skip
# The classifier optimiser's other settings, the library's defaults (momentum 0.9 and the
# Keras equivalent of the paper's coupled weight decay).
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-3
# The cosine schedule ends at 2% of the initial rate (the paper: 0.05 down to 1e-3).
COSINE_ALPHA = 0.02
LABEL_ERRORS_KEPT = 200
VERIFICATION_SAMPLES = 256


def parse_noise(spec):
    """Splits a `KIND:RATE` noise specification (or `none`) into `(kind, rate)`.

    Args:
        spec: `"none"`, or a `corrupt_labels` kind and a rate in [0, 1], e.g.
            `"instance:0.4"`.

    Returns:
        `(None, None)` for `"none"`, else `(kind, rate)`.

    Raises:
        ValueError: for an unknown kind or a rate that is not a number in [0, 1]; the
            message lists the kinds.

    Example:

    >>> parse_noise("symmetric:0.4")
    ('symmetric', 0.4)
    """
    from clidmu_tf.pipelines import NOISE_KINDS

    kinds = [kind for kind in NOISE_KINDS if kind != "transition"]
    if spec == "none":
        return None, None
    kind, separator, rate_text = spec.partition(":")
    if not separator or kind not in kinds:
        raise ValueError(
            "Received an invalid value for `--noise`, expected 'none' or KIND:RATE with KIND "
            f"one of {kinds} and RATE in [0, 1]. Received: --noise={spec!r}"
        )
    try:
        rate = float(rate_text)
    except ValueError:
        rate = float("nan")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(
            "Received an invalid value for `--noise`, expected a rate in [0, 1] after the "
            f"colon, e.g. {kind}:0.4. Received: --noise={spec!r}"
        )
    return kind, rate


def check_method_options(method, virtual_step, weight_normalization=None):
    """Refuses a meta-update option with a `--method` that it means nothing to.

    The rules are the library's (`CLIDMUModel` refuses `virtual_step="head"` with
    `meta_objective="none"`, and a `weight_normalization` with VRI or without a meta-model),
    checked here, before any data is loaded, in the options' own words.

    Raises:
        ValueError: naming the option, `--method` and their values, or, for a
            `weight_normalization` other than "batch", "class" and None, naming it.
    """
    meta_model, meta_objective = METHODS[method]
    # An unknown value is refused as such, before it is read as one given to a method
    # without sample weights.
    check_weight_normalization(weight_normalization)
    try:
        check_virtual_step(virtual_step, meta_objective)
    except ValueError:
        raise ValueError(
            f"--virtual-step {virtual_step} restricts the virtual step of the meta update, and "
            f"--method {method} trains plain cross-entropy, without one; leave --virtual-step "
            f"at full. Received: --virtual-step={virtual_step}, --method={method}"
        ) from None
    try:
        resolve_weight_normalization(
            weight_normalization, None, meta_model == "vri", meta_objective
        )
    except ValueError:
        raise ValueError(
            f"--weight-normalization scales Meta-Weight-Net's sample weights, and --method "
            f"{method} has none; leave it out. Received: "
            f"--weight-normalization={weight_normalization}, --method={method}"
        ) from None


def resolved_weight_normalization(method, weight_normalization, default=None):
    """What `--weight-normalization` comes to with `--method`.

    Args:
        method: a key of `METHODS`.
        weight_normalization: `"batch"`, `"class"` or None, as given.
        default: what None comes to where the method has sample weights; None: the
            library's (`DEFAULT_WEIGHT_NORMALIZATION`).

    Returns:
        `"batch"` or `"class"`, or None for a method without sample weights.
    """
    meta_model, meta_objective = METHODS[method]
    return resolve_weight_normalization(
        weight_normalization,
        default or DEFAULT_WEIGHT_NORMALIZATION,
        meta_model == "vri",
        meta_objective,
    )


def make_strategy(name):
    """The `tf.distribute` strategy named by `--distribute`."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def count_workers(strategy):
    """How many machines (processes) train together under `strategy`."""
    if strategy.num_replicas_in_sync == 1:
        return 1
    return strategy.num_replicas_in_sync // len(strategy.extended.worker_devices)


def resolve_backbone_name(name, input_shape):
    """The backbone `name` stands for; `"auto"` is `small_cnn` for images, `mlp` otherwise."""
    if name == "auto":
        return "small_cnn" if len(input_shape) == 3 else "mlp"
    return name


def resolve_augmentation(augment, backbone_name):
    """The `make_training_data` augmentation of the job's `augment` option.

    `"auto"` is the dataset's recipe, except for the MLP: an MLP has no notion of a shifted
    image. With the digits' 1-pixel shifts, CLID-MU's snapshot ensemble of the MLP scored
    about 9 points lower after 20 epochs, still learning, while the small CNN's scored
    about 7 points higher and stopped memorising (BENCHMARKS.md, "Memorisation and
    selection").
    """
    if augment == "none" or (augment == "auto" and backbone_name == "mlp"):
        return None
    return augment


def build_backbone(name, input_shape, num_classes):
    """A backbone by name (see `resolve_backbone_name`)."""
    from clidmu_tf import backbones

    name = resolve_backbone_name(name, input_shape)
    if name == "wide_resnet":
        return backbones.wide_resnet(28, 10, input_shape, num_classes)
    return getattr(backbones, name)(input_shape, num_classes)


def describe_preprocessing(dataset):
    """What an exported model's input must look like, for the model card."""
    from clidmu_tf.cli.data_sources import stored_dtype

    if stored_dtype(dataset) == np.uint8:
        description = "float32 pixels in [0, 1]: uint8 values divided by 255"
    else:
        description = f"float32 values as clidmu_tf's {dataset.name!r} loader gives them"
    return {"input_shape": list(dataset.input_shape), "description": description}


def verification_inputs(dataset):
    """The inputs an export is verified on: the first `VERIFICATION_SAMPLES` of the test
    split, float32 `[n, *input_shape]`; only they are decoded, whatever the split's size."""
    count = min(VERIFICATION_SAMPLES, len(dataset.y_test))
    return dataset.inputs(np.arange(count), split="test")


class TrainingJob:
    """Trains CLID-MU and a baseline on the same noisy data and writes a run directory.

    Stages: load the data and inject the noise; train the chosen method with the CLID
    snapshot callback and TensorBoard logs; train the cross-entropy baseline from the same
    initial weights on the same labels; evaluate the final model and the snapshot ensemble
    on the test split; rank the training labels by how likely they are wrong
    (`clidmu_tf.label_issues`, the ranking `inspect` gives by default); export the
    ensemble to SavedModel and ONNX (verified); draw the plots; write `report.json`.

    The job holds the run directory's lock from start to end (a second job on the same
    directory is refused), and loads the data, builds the training data and the model and
    checks them before it writes anything: an error found there leaves the directory as it
    was (and removes it if the job created it). With `overwrite`, the earlier run's files
    are moved aside and deleted only when the new run ends; if it fails they are put back.

    A `KeyboardInterrupt` during training stops the training stages: the snapshots saved so
    far are kept, the evaluation, ranking and plots still run (the export does not), and
    the report is written with `"status": "interrupted"`; each model's row says in which
    epoch it was stopped. Any other error (a diverged loss stops training at its first
    non-finite batch) leaves `report.partial.json` marked `"failed"` with the error, the
    snapshots kept so far and what `resume` needs, but no `model.keras`, so a failed run
    never looks like a result. After every epoch the training state is backed up with
    Keras's `BackupAndRestore`, so a run killed outright continues with `resume=True`. A
    resumed run that fails is marked `"failed"` and keeps what it continues from, so it can
    be resumed again; one refused (other options) leaves the directory as it was.

    Args:
        config: a dict with the keys of `DEFAULTS` (missing keys take those values).
        directory: the run directory; created (or, with `overwrite`, replaced).
        overwrite: whether an earlier run in `directory` may be replaced.
        resume: whether to continue the unfinished run in `directory` from its last
            completed epoch. Its options must come to the same settings as `config` (an
            option of `RESOLVED_OPTIONS` given at the value its default came to counts as
            the same); otherwise a `ValueError` is raised before anything is written.
        verbose: Keras verbosity of `fit` (0 silent, 1 progress bars, 2 one line per
            epoch); stage messages are printed unless it is 0.
        stream: where stage messages go.

    Example:

    >>> job = TrainingJob({"epochs": 2, "limit_train": 300}, "runs/quick")  # doctest: +SKIP
    >>> job.run()  # doctest: +SKIP
    'completed'
    """

    def __init__(self, config, directory, overwrite=False, verbose=1, stream=None, resume=False):
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f"Unknown configuration keys {unknown}. Known keys: {sorted(DEFAULTS)}"
            )
        self.config = {**DEFAULTS, **config}
        if self.config["method"] not in METHODS:
            raise ValueError(
                f"Received an invalid value for `method`, expected one of {sorted(METHODS)}. "
                f"Received: method={self.config['method']!r}"
            )
        if self.config["snapshot_selection"] not in SNAPSHOT_SELECTIONS:
            raise ValueError(
                "Received an invalid value for `snapshot_selection`, expected one of "
                f"{list(SNAPSHOT_SELECTIONS)}. Received: "
                f"snapshot_selection={self.config['snapshot_selection']!r}"
            )
        if self.config["selection_size"] is not None and self.config["snapshot_selection"] != "held-out":
            raise ValueError(
                "`selection_size` sizes the held-out selection set, which "
                "snapshot_selection='meta-set' does not use. Received: selection_size="
                f"{self.config['selection_size']!r} with snapshot_selection='meta-set'"
            )
        overwrite = check_bool("overwrite", overwrite)
        resume = check_bool("resume", resume)
        check_method_options(
            self.config["method"], self.config["virtual_step"], self.config["weight_normalization"]
        )
        self.noise_kind, self.noise_rate = parse_noise(self.config["noise"])
        self.run_directory = RunDirectory(directory)
        self.run_directory.check_writable(overwrite, resume)
        self.overwrite = overwrite
        self.resume = resume
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.report = None
        # Filled in by the stages; a stage finds None when an earlier one was interrupted.
        self.model = None
        self.baseline = None
        self.ensemble = None
        self.ensemble_members = []
        self.dynamics = None
        self.weights = None
        self.label_issues = None

    @property
    def trains_baseline(self):
        return self.config["baseline"] == "ce" and METHODS[self.config["method"]][1] != "none"

    def _say(self, message):
        if self.verbose:
            print(f"[clidmu-tf] {message}", file=self.stream, flush=True)

    def run(self):
        """Runs every stage and returns the run's status.

        Returns:
            `"completed"` or `"interrupted"`.

        Raises:
            RuntimeError: when another process is writing to the directory, or training
                diverged.
            Exception: whatever made the run fail; when it failed after writing began, the
                partial report was marked `"failed"` first.
        """
        with self.run_directory.lock():
            # Checked again under the lock: another run may have written in the meantime.
            self.run_directory.check_writable(self.overwrite, self.resume)
            if self.run_directory.stale_lock_pid is not None:
                self._say(
                    f"Found the lock of process {self.run_directory.stale_lock_pid}, which is no "
                    "longer running (a killed run); taking the directory over."
                )
            # With `resume`, the options are compared in `_prepare` once the data they
            # resolve against is loaded, before anything is written.
            self._prepare()
            return self._write_run()

    def _check_resumable(self):
        """Raises unless the unfinished run was started with this job's settings.

        Every option is compared; those of `RESOLVED_OPTIONS` by what they came to (the
        report's `resolved_options`), so that `--selection-size 20` continues a run started
        without it whose default came to 20, while 21 is refused. A report written before
        the resolved values were kept is compared option by option as given.
        """
        earlier = RunReport.load(self.run_directory.path, allow_unfinished=True)
        given_then, given_now = earlier["config"], json.loads(json.dumps(self.config))
        resolved_then = earlier.get("resolved_options")
        if "weight_normalization" not in (given_then if resolved_then is None else resolved_then):
            # Started before the option existed: Meta-Weight-Net's weights were normalised
            # over the batch (the authors' way), and nothing else had weights. A report
            # without resolved values compares the options as given.
            then = resolved_weight_normalization(
                given_then.get("method", DEFAULTS["method"]), None, default="batch"
            )
            if resolved_then is None:
                given_then = {**given_then, "weight_normalization": then}
            else:
                resolved_then = {**resolved_then, "weight_normalization": then}
        resolved_now = json.loads(json.dumps(self.resolved_options))
        details = []
        for key in sorted(given_now):
            then, now = given_then.get(key), given_now[key]
            if resolved_then is not None and key in resolved_now:
                if resolved_then.get(key) == resolved_now[key]:
                    continue
                then = _came_to(then, resolved_then.get(key))
                now = _came_to(now, resolved_now[key])
            elif then == now:
                continue
            else:
                then, now = repr(then), repr(now)
            details.append(f"--{key.replace('_', '-')} {then} then, {now} now")
        if details:
            details = ", ".join(details)
            raise ValueError(
                f"--resume continues the run in {self.run_directory.path!r} with the options it "
                f"was started with, and these differ: {details}. Repeat its command, or pass "
                "--overwrite instead of --resume to start afresh."
            )

    def _write_run(self):
        directory = self.run_directory
        if self.resume:
            self.report = RunReport.continued(directory.path)
            self._say(f"Resuming the run in {directory.path} ...")
        else:
            if self.overwrite:
                directory.replace_aside()
            self.report = RunReport(directory.path, self.config)
            self.report["resolved_options"] = self.resolved_options
        status = "completed"
        try:
            os.makedirs(directory.plots, exist_ok=True)
            self._record_data()
            try:
                self._train_method()
                if self.trains_baseline:
                    self._train_baseline()
            except KeyboardInterrupt:
                status = "interrupted"
                self._say("Interrupted: keeping the snapshots saved so far, writing the report.")
            self._save_models()
            self._evaluate()
            self._rank_label_errors()
            if status == "completed" and self.config["export_formats"]:
                self._export()
            self._plot()
            self._wait_for_other_workers()
        except KeyboardInterrupt:
            status = "interrupted"
        except BaseException as error:
            self._fail(error)
            raise
        self.report.finish(status)
        shutil.rmtree(directory.join(RunDirectory.RESUME), ignore_errors=True)
        directory.discard_replaced()
        return status

    def _wait_for_other_workers(self):
        """Returns once every worker has reached it (a no-op on one machine).

        The chief hosts the cluster's coordination service: a worker still running when the
        chief exits, or the chief while a worker exits, logs the other as failed.
        """
        import tensorflow as tf

        if count_workers(self.strategy) > 1:
            self.strategy.reduce(
                "SUM", self.strategy.run(lambda: tf.constant(1.0)), axis=None
            )

    def _fail(self, error):
        """Marks the run failed; a new run that replaced another gives the earlier one back.

        A resumed run is only marked failed: it keeps what it continues from (and a
        `.replaced-run/` its first start set aside), so that it can be resumed again.
        """
        directory = self.run_directory
        for name in (RunDirectory.MODEL, RunDirectory.BASELINE_MODEL):
            # A model that did not end its training is not a result (predict would serve it).
            if os.path.exists(directory.join(name)):
                os.remove(directory.join(name))
        if not self.resume and os.path.isdir(directory.join(RunDirectory.REPLACED)):
            directory.restore_replaced()
            self._say(f"The run failed; the earlier run in {directory.path} was put back.")
            return
        self.report.finish(
            "failed",
            error={
                "type": type(error).__name__,
                "message": str(error),
                "traceback": traceback.format_exc(),
            },
        )

    # Stages.

    def _prepare(self):
        import keras

        from clidmu_tf.cli.data_sources import load_source_dataset, load_unlabeled_like
        from clidmu_tf.pipelines import make_training_data

        config = self.config
        # Layer names come from process-wide counters and are part of the backbone's config,
        # which a resumed run's snapshots are checked against: start them afresh, so that the
        # same job names its layers the same way in any process.
        keras.backend.clear_session()
        keras.utils.set_random_seed(config["seed"])
        self.strategy = make_strategy(config["distribute"])
        self._say(f"Loading {config['dataset']} and injecting noise {config['noise']} ...")
        started = time.perf_counter()
        dataset = load_source_dataset(
            config["dataset"],
            data_dir=config["data_dir"],
            image_size=config["image_size"],
            label_file=config["label_file"],
            # Unlabelled images are arrays, joined to the training images in memory.
            stream=config["unlabeled_dir"] is None,
        )
        self.unlabeled = (
            None
            if config["unlabeled_dir"] is None
            else load_unlabeled_like(dataset, config["unlabeled_dir"], config["dataset"])
        )
        options = {
            "noise": self.noise_kind,
            "noise_rate": self.noise_rate,
            "class_map": config["class_map"],
            "meta_size": config["meta_size"],
            "batch_size": config["batch_size"],
            "meta_batch_size": config["meta_batch_size"],
            "train_size": config["limit_train"],
            "selection_size": self._selection_size(dataset),
            "labeled_fraction": config["labeled_fraction"],
            "unlabeled_inputs": self.unlabeled,
            "augment": resolve_augmentation(
                config["augment"],
                resolve_backbone_name(config["backbone"], dataset.input_shape),
            ),
            "seed": config["seed"],
        }
        self.data = make_training_data(
            dataset, meta_objective=METHODS[config["method"]][1], **options
        )
        self.baseline_data = (
            make_training_data(dataset, meta_objective="none", **options)
            if self.trains_baseline
            else None
        )
        self.resolved_options = self._resolved_options(dataset)
        if self.resume:
            # Before the model and the callbacks, which read the run's files.
            self._check_resumable()
        self.load_seconds = round(time.perf_counter() - started, 3)
        data = self.data
        if len(data.meta_indices) < 2:
            raise ValueError(
                f"The meta set holds {len(data.meta_indices)} sample(s); CLID compares samples "
                "with each other and needs at least 2. Raise --limit-train or --meta-size"
                + (" or lower --selection-size" if len(data.selection_indices) else "")
                + f". Received: --limit-train={config['limit_train']}, "
                f"--meta-size={config['meta_size']}"
                + (f", --selection-size={len(data.selection_indices)}"
                   if len(data.selection_indices) else "")
            )
        if METHODS[config["method"]][1] == "clid":
            try:
                check_meta_batch_size(
                    data.meta_batch_size, self.strategy.num_replicas_in_sync, "--meta-batch-size"
                )
            except ValueError as error:
                if config["meta_batch_size"] is not None:
                    raise
                raise ValueError(f"{error} (the default for this data)") from None
        self.test_labels = dataset.y_test
        # For an image folder, which file each labelled sample is (`inspect`'s file column).
        self.training_files = training_files(dataset, data.labeled_indices, config["dataset"])
        self.class_names = list(dataset.class_names) if dataset.class_names else None
        self.noise_injected = self.noise_kind is not None or dataset.y_train_clean is not None
        # Built here, before anything is written, so that their errors leave no run behind.
        self.model = self._compiled_model(METHODS[config["method"]][1], data)
        self.snapshots = self._snapshot_callback()
        # What each epoch made of each training label: the signals `inspect` ranks by.
        from clidmu_tf.callbacks import TrainingDynamicsRecorder

        self.dynamics = TrainingDynamicsRecorder(
            # Every given label, the held-out selection set's too (seen, never trained on),
            # read from the dataset batch by batch after each epoch.
            self.data.input_stream(self.data.labeled_indices, self.data.batch_size),
            self.data.labeled_noisy_labels,
            path=self.run_directory.join(RunDirectory.TRAINING_DYNAMICS),
            resume=self.resume,
        )

    def _record_data(self):
        from clidmu_tf.cli.data_sources import stored_dtype
        from clidmu_tf.pipelines import StreamedDataset

        data = self.data
        self.report["timings"]["load_data"] = self.load_seconds
        self.report["distribution"] = {
            "strategy": type(self.strategy).__name__,
            "replicas": self.strategy.num_replicas_in_sync,
            "workers": count_workers(self.strategy),
        }
        self.report["data"] = {
            **data.summary(),
            "class_names": self.class_names,
            "input_dtype": str(stored_dtype(data.dataset)),
            "streamed": isinstance(data.dataset, StreamedDataset),
            "pixel_scale": data.dataset.pixel_scale,
            "labeled_fraction": self.config["labeled_fraction"],
            "unlabeled_images": 0 if self.unlabeled is None else len(self.unlabeled),
        }
        self.report["noise"] = data.noise_report.to_dict()
        if "method" not in self.report:
            self.report["method"] = {"name": self.config["method"], "epochs": []}
        self.run_directory.save_training_labels(
            indices=data.labeled_indices,
            given=data.labeled_noisy_labels,
            true=data.labeled_clean_labels,
            held_out=data.labeled_held_out,
            files=self.training_files,
        )
        self.report.save()
        self._say(
            f"{len(data.train_indices)} training samples, {data.noise_report.num_flipped} "
            f"labels flipped ({data.noise_report.flip_rate:.1%}), meta set of "
            f"{len(data.meta_indices)}, "
            + (
                f"{len(data.selection_indices)} held out to select the snapshots, "
                if len(data.selection_indices)
                else ""
            )
            + f"{len(self.test_labels)} test samples."
        )

    def _compiled_model(self, meta_objective, data):
        import keras

        from clidmu_tf import CLIDMUModel
        from clidmu_tf.models.clidmu_model import default_meta_optimizer

        config = self.config
        # The same seed before each build: the baseline starts from CLID-MU's initial weights.
        keras.utils.set_random_seed(config["seed"])
        meta_model_name = METHODS[config["method"]][0]
        with self.strategy.scope():
            backbone = build_backbone(config["backbone"], data.input_shape, data.num_classes)
            model = CLIDMUModel(
                backbone,
                meta_model=meta_model_name,
                meta_objective=meta_objective,
                temperature=config["temperature"],
                meta_every=config["meta_every"],
                # The cross-entropy baseline takes no virtual step: "full" is the default
                # that means nothing there, whatever the method's --virtual-step.
                virtual_step="full" if meta_objective == "none" else config["virtual_step"],
                weight_normalization=(
                    None if meta_objective == "none" else config["weight_normalization"]
                ),
                seed=config["seed"],
            )
            learning_rate = config["learning_rate"]
            if config["lr_schedule"] == "cosine":
                learning_rate = keras.optimizers.schedules.CosineDecay(
                    learning_rate,
                    decay_steps=config["epochs"] * data.steps_per_epoch,
                    alpha=COSINE_ALPHA,
                )
            # The library's default meta optimiser, at the configured rate if one is given.
            meta_optimizer = default_meta_optimizer(
                model.meta_model, learning_rate=config["meta_learning_rate"]
            )
            model.compile(
                optimizer=keras.optimizers.SGD(
                    learning_rate, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
                ),
                meta_optimizer=meta_optimizer,
                jit_compile=config["jit"],
            )
        return model

    def _resolved_options(self, dataset):
        """What each option of `RESOLVED_OPTIONS` came to in this run (JSON values)."""
        from clidmu_tf.models.clidmu_model import DEFAULT_META_LEARNING_RATES

        config, data = self.config, self.data
        backbone = resolve_backbone_name(config["backbone"], dataset.input_shape)
        augment = resolve_augmentation(config["augment"], backbone)
        meta_model = METHODS[config["method"]][0]
        return {
            "backbone": backbone,
            "augment": dataset.augmentation if augment == "auto" else augment or "none",
            "meta_size": int(len(data.meta_indices)),
            "meta_batch_size": int(data.meta_batch_size),
            "selection_size": int(len(data.selection_indices)),
            "meta_learning_rate": (
                config["meta_learning_rate"] or DEFAULT_META_LEARNING_RATES[meta_model]
            ),
            "labeled_fraction": (
                None if config["labeled_fraction"] in (None, 1.0) else config["labeled_fraction"]
            ),
            "class_map": (
                config["class_map"] or dataset.class_map
                if self.noise_kind == "asymmetric"
                else None
            ),
            # None trains on every sample, and images keep the size they were read at.
            "limit_train": config["limit_train"] or len(dataset.y_train),
            "image_size": (
                [int(side) for side in dataset.input_shape[:2]]
                if len(dataset.input_shape) == 3
                else config["image_size"]
            ),
            "weight_normalization": resolved_weight_normalization(
                config["method"], config["weight_normalization"]
            ),
        }

    def _selection_size(self, dataset):
        """The held-out selection set's size: 0 for the paper's rule, else the given or default
        size; a held-out rule the data is too small for is refused rather than dropped."""
        from clidmu_tf.pipelines import default_selection_size

        config = self.config
        if config["snapshot_selection"] == "meta-set":
            return 0
        if config["selection_size"] is not None:
            return config["selection_size"]
        size = default_selection_size(config["limit_train"] or len(dataset.y_train))
        if not size:
            raise ValueError(
                "snapshot_selection='held-out' needs at least 20 training samples to hold a "
                "tenth out; raise limit_train or give selection_size. Received: "
                f"limit_train={config['limit_train']}"
            )
        return size

    @property
    def selection_monitor(self):
        """The per-epoch CLID the snapshots are ranked by: on the held-out selection set
        (`held_out_clid`) or, the paper's rule, on the meta set (`meta_clid`)."""
        return "meta_clid" if self.data.selection_stream is None else "held_out_clid"

    def _snapshot_callback(self):
        from clidmu_tf.callbacks import CLIDSnapshotEnsemble

        held_out = self.data.selection_stream is not None
        return CLIDSnapshotEnsemble(
            self.data.selection_stream if held_out else self.data.meta_stream,
            monitor=self.selection_monitor,
            top_k=self.config["top_k"],
            directory=self.run_directory.snapshots,
            batch_size=self.data.meta_batch_size,
            # A resumed run continues its manifest; an overwritten run's snapshots are moved
            # aside before training starts, so none is found then.
            resume=self.resume or self.overwrite,
        )

    def _fit(self, model, data, name, callbacks):
        """Fits `model` from its last backed-up epoch, recording every epoch in the report.

        Keras's `BackupAndRestore` saves the model's weights and both optimisers' states
        (the meta-model and the meta-optimiser are attributes of `CLIDMUModel`, so its weight
        file holds them) after every epoch, and restores them when the fit starts again.
        The epochs recorded after the backup are dropped, since they run again, and the
        input streams are run through the completed epochs without training, as `fit`
        would have run them, so that the shuffling and augmentation of the epochs still to
        come are those of a run that was never stopped.

        Raises:
            RuntimeError: when the loss becomes NaN or infinite (training diverged).
            KeyboardInterrupt: after recording the epoch in which training was stopped.
        """
        import keras

        from clidmu_tf.cli.divergence_guard import DivergenceGuard
        from clidmu_tf.cli.epoch_recorder import EpochRecorder

        history = self.report[name]["epochs"]
        with self.strategy.scope():
            # Built as training builds them (the classifier's optimiser on the backbone's
            # variables, the meta-optimiser on the meta-model's), so that the backup's
            # optimiser states load into them; BackupAndRestore would build the classifier's
            # on every trainable variable, and the saved state would be skipped.
            model.build_optimizers()
        backup = keras.callbacks.BackupAndRestore(
            self.run_directory.join(RunDirectory.RESUME, name)
        )
        completed = _backed_up_epochs(backup)
        history[:] = [entry for entry in history if entry["epoch"] <= completed]
        if completed:
            self._say(f"Continuing {name} after epoch {completed}, from {backup.backup_dir}.")
            for _ in range(completed):
                for _ in data.train:
                    pass
                # Keras's epoch iterator opens the next epoch's iterator as soon as an
                # epoch's batches are used up, and a fresh one when the epoch begins; the
                # unused one still draws the next reshuffling seed, so it is drawn here too.
                iter(data.train)
        recorder = EpochRecorder(history, self.report)
        # Only CLID-MU keeps a snapshot ensemble; the baseline keeps none.
        guard = DivergenceGuard(
            self.config["learning_rate"],
            name,
            kept_snapshots=(lambda: self.snapshots.snapshots) if name == "method" else None,
        )
        tensorboard = keras.callbacks.TensorBoard(self.run_directory.logs(name))
        try:
            model.fit(
                data.train,
                epochs=self.config["epochs"],
                validation_data=data.evaluation,
                # The recorder and the snapshots come before the backup: an epoch whose end
                # was not backed up is run again and replaces its records.
                callbacks=[guard, *callbacks, recorder, backup, tensorboard],
                verbose=self.verbose,
            )
        except KeyboardInterrupt:
            if len(history) < self.config["epochs"]:
                self.report[name]["stopped_in_epoch"] = len(history) + 1
            raise

    def _train_method(self):
        config = self.config
        finished = self.run_directory.join(RunDirectory.RESUME, "method.keras")
        if self.report["method"].get("trained") and os.path.isfile(finished):
            # A resumed run whose CLID-MU training had ended: only the baseline is left.
            self.model = load_keras_file(finished)
            return
        self._say(
            f"Training {config['method']} ({self.model.backbone.name}, "
            f"{self.model.backbone.count_params():,} parameters) for {config['epochs']} epochs ..."
        )
        with self.report.timed("train_method"):
            self._fit(self.model, self.data, "method", [self.snapshots, self.dynamics])
        self.model.save(finished)
        self.report["method"]["trained"] = True
        self.report.save()

    def _train_baseline(self):
        if "baseline" not in self.report:
            self.report["baseline"] = {"name": "ce", "epochs": []}
        self.baseline = self._compiled_model("none", self.baseline_data)
        self._say(f"Training the cross-entropy baseline for {self.config['epochs']} epochs ...")
        with self.report.timed("train_baseline"):
            self._fit(self.baseline, self.baseline_data, "baseline", [])

    def _save_models(self):
        """Saves the models that trained (a stopped model's row says in which epoch)."""
        if self.model is not None:
            self.model.save(self.run_directory.join(RunDirectory.MODEL))
        if self.baseline is not None:
            self.baseline.save(self.run_directory.join(RunDirectory.BASELINE_MODEL))

    def _evaluate(self):
        from clidmu_tf.callbacks import read_snapshot_manifest

        if self.model is None:
            return
        self._say("Evaluating on the test split ...")
        with self.report.timed("evaluate"):
            method = self.report["method"]
            method["test"] = self._test_scores(self.model)
            self.report["test_accuracy"] = method["test"]["accuracy"]
            if self.baseline is not None:
                self.report["baseline"]["test"] = self._test_scores(self.baseline)
                self.report["baseline_test_accuracy"] = self.report["baseline"]["test"]["accuracy"]
            try:
                manifest = read_snapshot_manifest(self.run_directory.snapshots)
            except FileNotFoundError:
                self.ensemble = None
                self.report["ensemble_test_accuracy"] = None
                return
            self.ensemble = self.run_directory.load_model("ensemble")
            self.ensemble_members = manifest["snapshots"]
            logits = self.ensemble.predict(self.data.evaluation, verbose=0)
            accuracy = float(np.mean(np.argmax(logits, axis=1) == self.test_labels))
            self.report["ensemble"] = {
                "members": self.ensemble_members,
                "test_accuracy": accuracy,
            }
            self.report["ensemble_test_accuracy"] = accuracy
            best = self.ensemble_members[0]["epoch"] if self.ensemble_members else None
            by_epoch = {entry["epoch"]: entry for entry in method["epochs"]}
            if best in by_epoch:
                # The single epoch CLID ranks best: what the ensemble is compared with.
                self.report["ensemble"]["lowest_clid_epoch"] = best
                self.report["ensemble"]["lowest_clid_epoch_test_accuracy"] = by_epoch[best].get(
                    "test_accuracy"
                )
        self.report.save()

    def _test_scores(self, model):
        scores = model.evaluate(self.data.evaluation, return_dict=True, verbose=0)
        return {name: float(value) for name, value in scores.items()}

    def _rank_label_errors(self):
        from clidmu_tf.cli.label_errors import rank_label_errors, write_label_errors_csv
        from clidmu_tf.label_issue_ranking import label_issues

        if self.ensemble is None or METHODS[self.config["method"]][1] == "none":
            return
        data = self.data
        with self.report.timed("rank_label_errors"):
            # The ranking `inspect` gives by default, from the run's saved files.
            issues = label_issues(
                self.run_directory.path,
                data.input_stream(data.labeled_indices, data.batch_size),
                data.labeled_noisy_labels,
            )
            self.label_issues = issues
            self.weights = issues["weights"]
            rows = rank_label_errors(
                issues,
                data.labeled_noisy_labels,
                indices=data.labeled_indices,
                true=data.labeled_clean_labels if self.noise_injected else None,
                class_names=self.class_names,
                top=LABEL_ERRORS_KEPT,
                held_out=data.labeled_held_out,
                files=self.training_files,
            )
            write_label_errors_csv(self.run_directory.join(RunDirectory.LABEL_ERRORS), rows)
            self.run_directory.save_training_labels(
                indices=data.labeled_indices,
                given=data.labeled_noisy_labels,
                true=data.labeled_clean_labels,
                held_out=data.labeled_held_out,
                weights=self.weights,
                files=self.training_files,
            )
            self.report["label_issues"] = label_issue_summary(
                issues,
                data.labeled_flipped if self.noise_injected else None,
                dynamics=self.dynamics.dynamics(),
            )
        self.report.save()

    def _export(self):
        from clidmu_tf.export import export_ensemble

        if self.ensemble is None:
            return
        formats = ", ".join(self.config["export_formats"])
        self._say(f"Exporting the snapshot ensemble ({formats}) ...")
        with self.report.timed("export"):
            card = export_ensemble(
                self.ensemble,
                self.run_directory.export,
                formats=tuple(self.config["export_formats"]),
                class_names=self.class_names,
                preprocessing=describe_preprocessing(self.data.dataset),
                noise_report=self.data.noise_report,
                metrics={"test_accuracy": self.report["ensemble_test_accuracy"]},
                members=self.ensemble_members,
                selection_monitor=self.selection_monitor,
                verification_inputs=verification_inputs(self.data.dataset),
            )
        self.report["export"] = {
            "directory": RunDirectory.EXPORT,
            "formats": list(self.config["export_formats"]),
            "verification": card.get("verification"),
        }
        self.report.save()

    def _plot(self):
        from clidmu_tf.cli import plots

        self._say("Drawing the plots ...")
        written = []
        with self.report.timed("plots"):
            method_epochs = self.report["method"]["epochs"]
            baseline_epochs = self.report.get("baseline", {}).get("epochs")
            if method_epochs:
                path = os.path.join(self.run_directory.plots, "clid_and_test_accuracy.png")
                written.append(
                    plots.plot_clid_and_accuracy(
                        path,
                        epochs=[entry["epoch"] for entry in method_epochs],
                        clid=[entry.get(self.selection_monitor) for entry in method_epochs],
                        clid_label=(
                            "CLID on the held-out selection set"
                            if self.selection_monitor == "held_out_clid"
                            else "CLID on the meta set"
                        ),
                        test_accuracy=[entry.get("test_accuracy") for entry in method_epochs],
                        baseline_accuracy=(
                            [entry.get("test_accuracy") for entry in baseline_epochs]
                            if baseline_epochs
                            else None
                        ),
                        selected_epochs=[member["epoch"] for member in self.ensemble_members],
                    )
                )
            if self.weights is not None:
                written += self._plot_weights(plots)
            if self.label_issues is not None:
                summary = self.report["label_issues"]
                written.append(
                    plots.plot_label_issues(
                        os.path.join(self.run_directory.plots, "label_issues.png"),
                        quality=self.label_issues["quality"],
                        score=summary["score"],
                        num_issues=summary["suggested_num_issues"],
                        flipped=self.data.labeled_flipped if self.noise_injected else None,
                        roc_curve=summary.get("roc_curve"),
                    )
                )
            if self.noise_injected:
                path = os.path.join(self.run_directory.plots, "noise_transition_matrix.png")
                written.append(
                    plots.plot_transition_matrix(
                        path,
                        transition=self.data.noise_report.transition,
                        class_names=self.class_names,
                        title=(
                            "Empirical noise transition matrix P(given = j | true = i)\n"
                            f"{self.config['noise']}, realised flip rate "
                            f"{self.data.noise_report.flip_rate:.1%}"
                        ),
                    )
                )
        self.report["plots"] = [os.path.relpath(path, self.run_directory.path) for path in written]

    def _plot_weights(self, plots):
        from clidmu_tf import MetaWeightNet

        written = []
        flipped = self.data.labeled_flipped if self.noise_injected else None
        if isinstance(self.model.meta_model, MetaWeightNet):
            # The final model's loss of each training label, the last epoch's record.
            given_probability = self.dynamics.dynamics()["given_probability"][-1]
            sample_losses = -np.log(np.maximum(given_probability, 1e-12))
            upper = max(float(np.quantile(sample_losses, 0.995)), 1.0)
            grid = np.linspace(0.0, upper, 200, dtype=np.float32)
            curve = np.asarray(self.model.meta_model(grid[:, None]))[:, 0]
            written.append(
                plots.plot_weight_function(
                    os.path.join(self.run_directory.plots, "meta_weight_function.png"),
                    losses=grid,
                    weights=curve,
                    sample_losses=sample_losses,
                    flipped=flipped,
                )
            )
        if flipped is not None and flipped.any():
            from clidmu_tf.label_issue_ranking import ranking_metrics

            written.append(
                plots.plot_weight_histograms(
                    os.path.join(self.run_directory.plots, "sample_weight_histograms.png"),
                    weights=self.weights,
                    flipped=flipped,
                    auc=ranking_metrics(self.weights, flipped)["roc_auc"],
                )
            )
        return written


def label_issue_summary(issues, flipped=None, dynamics=None):
    """The report's `label_issues` entry: the score, cleanlab's suggested number of wrong
    labels and, when the flips are known, the ranking's ROC AUC, precision and ROC curve,
    and the ROC AUC and precision of every other score (`inspect --score`)."""
    from sklearn.metrics import roc_curve

    from clidmu_tf.label_issue_ranking import SCORES, label_quality, ranking_metrics

    summary = {
        "score": issues["score"],
        "num_samples": int(len(issues["quality"])),
        "suggested_num_issues": issues["num_issues"],
    }
    metrics = None if flipped is None else ranking_metrics(issues["quality"], flipped)
    if metrics is None:
        return summary
    false_positive, true_positive, _ = roc_curve(flipped, -issues["quality"])
    labels = dynamics["given_label"]
    summary.update(
        num_flipped=int(np.sum(flipped)),
        **metrics,
        roc_curve={
            "false_positive_rate": np.round(false_positive, 4).tolist(),
            "true_positive_rate": np.round(true_positive, 4).tolist(),
            "roc_auc": metrics["roc_auc"],
        },
        every_score={
            name: ranking_metrics(
                label_quality(
                    name,
                    labels,
                    issues["probabilities"],
                    weights=issues["weights"],
                    dynamics=dynamics,
                ),
                flipped,
            )
            for name in SCORES
        },
    )
    return summary


def _came_to(given, resolved):
    """An option as given and, when that differs, what it came to (for messages)."""
    return repr(given) if given == resolved else f"{given!r} (came to {resolved!r})"


def _backed_up_epochs(backup):
    """The number of epochs a `BackupAndRestore` directory says were completed (0 if none)."""
    path = os.path.join(backup.backup_dir, "training_metadata.json")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return int(json.load(handle).get("epoch", 0))
