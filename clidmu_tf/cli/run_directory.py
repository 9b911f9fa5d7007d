"""The layout of a `clidmu-tf train` run directory, and how to read a finished run back."""

import contextlib
import os
import shutil

import numpy as np

from clidmu_tf.atomic_files import read_arrays
from clidmu_tf.cli.run_report import RunReport


class RunDirectory:
    """A run directory: where `clidmu-tf train` writes and the other sub-commands read.

    Layout:

    - `report.json`: the run's report (`report.partial.json` while it runs, or after a
      failure); see `RunReport`.
    - `model.keras`: the CLID-MU model after its last epoch; `baseline.keras`: the
      cross-entropy baseline.
    - `snapshots/`: the CLID snapshot ensemble (`CLIDSnapshotEnsemble`'s files).
    - `logs/<model>/`: TensorBoard logs.
    - `export/`: the exported ensemble (`saved_model/`, `model.onnx`, `model_card.json`).
    - `plots/`: the PNG figures.
    - `training_labels.npz`: the samples with a given label (those trained on, then the
      held-out selection set's unless it came from unlabelled samples), with their given
      (noisy) and true labels, whether each belongs to the held-out selection set
      (`held_out`) and the meta-model's per-sample weights.
    - `training_dynamics.npz`: per epoch and labelled sample, the given label's probability
      and margin and the meta-model's weight, and per epoch cleanlab's count of label issues
      (`TrainingDynamicsRecorder`).
    - `label_errors.csv`: the training samples the meta-model trusts least.
    - `.resume/`: while a run is going, what `train --resume` continues from (Keras
      `BackupAndRestore` backups of the model being trained, and the finished CLID-MU model
      while the baseline trains); removed when the run ends.
    - `.replaced-run/`: while a run started with `--overwrite` is going, the earlier run's
      files, put back if the new run fails and deleted once it ends.
    - `.clidmu-tf.lock`: held by the `train` process writing the directory.

    Only these names are ever written, moved or deleted; other files (the user's notes) are
    left alone.

    Args:
        path: the directory.

    Example:

    >>> run = RunDirectory("runs/demo")
    >>> run.snapshots
    'runs/demo/snapshots'
    """

    MODEL = "model.keras"
    BASELINE_MODEL = "baseline.keras"
    SNAPSHOTS = "snapshots"
    LOGS = "logs"
    EXPORT = "export"
    PLOTS = "plots"
    TRAINING_LABELS = "training_labels.npz"
    LABEL_ERRORS = "label_errors.csv"
    TRAINING_DYNAMICS = "training_dynamics.npz"
    RESUME = ".resume"
    REPLACED = ".replaced-run"
    LOCK = ".clidmu-tf.lock"
    # Everything a run writes, so that --overwrite replaces these and nothing else.
    RUN_ENTRIES = (
        RunReport.FINAL_NAME,
        RunReport.PARTIAL_NAME,
        MODEL,
        BASELINE_MODEL,
        SNAPSHOTS,
        LOGS,
        EXPORT,
        PLOTS,
        TRAINING_LABELS,
        LABEL_ERRORS,
        TRAINING_DYNAMICS,
        RESUME,
    )

    def __init__(self, path):
        self.path = os.fspath(path)
        # The process id found in a lock file that nobody held (a killed run's), if any.
        self.stale_lock_pid = None

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def snapshots(self):
        return self.join(self.SNAPSHOTS)

    @property
    def export(self):
        return self.join(self.EXPORT)

    @property
    def plots(self):
        return self.join(self.PLOTS)

    def logs(self, name):
        return self.join(self.LOGS, name)

    @property
    def is_run(self):
        """Whether the directory holds a run's report, finished or not."""
        names = (RunReport.FINAL_NAME, RunReport.PARTIAL_NAME)
        return any(os.path.isfile(self.join(name)) for name in names)

    def _user_entries(self):
        """The directory's entries other than the lock file (empty when it does not exist)."""
        if not os.path.isdir(self.path):
            return []
        return [name for name in os.listdir(self.path) if name != self.LOCK]

    def check_writable(self, overwrite, resume=False):
        """Checks that a run may be written here, without changing anything.

        Args:
            overwrite: whether an earlier run in the directory may be replaced.
            resume: whether an unfinished run in the directory is to be continued.

        Raises:
            ValueError: if the path is a file; if the directory is not empty and neither
                `overwrite` nor `resume` is set; if it is not empty and holds no earlier run,
                which `overwrite` never replaces; with `resume`, if it holds no unfinished
                run (none at all, or a finished one).
        """
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(
                "Received an invalid value for `--out`, expected a directory. Received: "
                f"--out={self.path!r}, which is a file"
            )
        if resume:
            if os.path.isfile(self.join(RunReport.FINAL_NAME)):
                raise ValueError(
                    f"The run in {self.path!r} already finished (it has {RunReport.FINAL_NAME}); "
                    "there is nothing to --resume. Pass --overwrite to train it again."
                )
            if not os.path.isfile(self.join(RunReport.PARTIAL_NAME)):
                raise ValueError(
                    f"{self.path!r} holds no unfinished run ({RunReport.PARTIAL_NAME}) to "
                    "--resume. Leave out --resume to start a new run."
                )
            return
        if not self._user_entries():
            return
        if not overwrite:
            raise ValueError(
                f"The output directory {self.path!r} exists and is not empty. Pass "
                "--overwrite to replace the run in it, --resume to continue an unfinished "
                "one, or choose another --out."
            )
        if not self.is_run:
            raise ValueError(
                f"The output directory {self.path!r} is not empty and holds no clidmu-tf run "
                "(no report.json), so --overwrite will not replace it. Choose another --out."
            )

    @contextlib.contextmanager
    def lock(self):
        """Holds the directory's lock file for the `with` block, so one `train` writes it.

        The lock is a `filelock.FileLock` (an `fcntl` lock on POSIX): the operating system
        releases it when its process ends, however it ends, so the lock of a killed run is
        never in the way; the file records the holder's process id for messages. A directory
        that this call created is removed again on the way out if the block left nothing in
        it (a run that failed before writing anything leaves no directory behind).

        Raises:
            RuntimeError: when another process holds the lock (the message gives its pid).
        """
        import filelock

        created = not os.path.isdir(self.path)
        os.makedirs(self.path, exist_ok=True)
        path = self.join(self.LOCK)
        lock = filelock.FileLock(path, timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise RuntimeError(
                f"Another clidmu-tf train (pid {_recorded_pid(path) or 'unknown'}) is writing "
                f"to {self.path!r}: wait for it to end, or choose another --out."
            ) from None
        try:
            previous = _recorded_pid(path)
            if previous is not None and previous != os.getpid():
                self.stale_lock_pid = previous
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()}\n")
            yield self
        finally:
            lock.release()
            if os.path.exists(path):
                os.remove(path)
            if created and not os.listdir(self.path):
                os.rmdir(self.path)

    def replace_aside(self):
        """Moves the files of the run in the directory into `.replaced-run/`.

        Only `RUN_ENTRIES` are moved; the user's own files stay. A `.replaced-run/` left by
        a killed run is deleted first (it held the run that killed run was replacing).
        """
        aside = self.join(self.REPLACED)
        if os.path.isdir(aside):
            shutil.rmtree(aside)
        present = [name for name in self.RUN_ENTRIES if os.path.lexists(self.join(name))]
        if not present:
            return
        os.makedirs(aside)
        for name in present:
            os.replace(self.join(name), os.path.join(aside, name))

    def restore_replaced(self):
        """Deletes what the failed new run wrote and puts the earlier run back."""
        aside = self.join(self.REPLACED)
        if not os.path.isdir(aside):
            return
        self.remove_run_files()
        for name in os.listdir(aside):
            os.replace(os.path.join(aside, name), self.join(name))
        os.rmdir(aside)

    def remove_run_files(self, names=None):
        """Deletes the named run entries (default: all of `RUN_ENTRIES`) that exist."""
        for name in self.RUN_ENTRIES if names is None else names:
            path = self.join(name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)

    def discard_replaced(self):
        """Deletes the earlier run's files once the new run has ended."""
        aside = self.join(self.REPLACED)
        if os.path.isdir(aside):
            shutil.rmtree(aside)

    def report(self, allow_unfinished=False):
        """The run's report (see `RunReport.load`)."""
        return RunReport.load(self.path, allow_unfinished=allow_unfinished)

    def load_model(self, which="final"):
        """Loads a trained model of the run.

        Args:
            which: `"final"` (the CLID-MU model after its last epoch), `"baseline"` (the
                cross-entropy baseline) or `"ensemble"` (the CLID snapshot ensemble).

        Returns:
            A Keras model whose output is the logits.

        Raises:
            FileNotFoundError: if the run has no such model.
        """
        if which == "ensemble":
            from clidmu_tf.callbacks import load_snapshot_ensemble

            return load_snapshot_ensemble(self.snapshots)
        name = {"final": self.MODEL, "baseline": self.BASELINE_MODEL}.get(which)
        if name is None:
            raise ValueError(
                "Received an invalid value for `which`, expected one of ['baseline', "
                f"'ensemble', 'final']. Received: which={which!r}"
            )
        path = self.join(name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"The run in {self.path!r} has no {which} model ({name}).")
        return load_keras_file(path)

    def save_training_labels(self, *, indices, given, true, held_out, weights=None, files=None):
        """Records the labelled samples' positions, given and true labels, whether each is in
        the held-out selection set, weights, and for an image folder each sample's file
        (`training_files`)."""
        arrays = {"indices": indices, "given": given, "true": true, "held_out": held_out}
        if weights is not None:
            arrays["weights"] = weights
        if files is not None:
            arrays["files"] = files
        np.savez(self.join(self.TRAINING_LABELS), **arrays)

    def training_labels(self):
        """The arrays `save_training_labels` wrote, as a dict; `held_out` is a bool array."""
        path = self.join(self.TRAINING_LABELS)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"The run in {self.path!r} has no {self.TRAINING_LABELS}: it did not get as far "
                "as loading its data."
            )
        labels = read_arrays(path)
        if "held_out" not in labels:
            # Written before the marks were kept: the held-out selection set's samples, if
            # any, were the last ones (`TrainingData.labeled_indices`).
            held = self.report(allow_unfinished=True).get("data", {}).get("num_selection", 0)
            labels["held_out"] = np.arange(len(labels["given"])) >= len(labels["given"]) - held
        labels["held_out"] = labels["held_out"].astype(bool)
        return labels

    def load_dataset(self, allow_unfinished=False):
        """Loads the run's dataset again from its configuration, as training loaded it."""
        from clidmu_tf.cli.data_sources import load_source_dataset

        config = self.report(allow_unfinished=allow_unfinished)["config"]
        image_size = config.get("image_size")
        dataset = load_source_dataset(
            config["dataset"],
            data_dir=config.get("data_dir"),
            image_size=None if image_size is None else tuple(image_size),
            label_file=config.get("label_file"),
        )
        self._check_same_files(dataset, config["dataset"])
        return dataset

    def _check_same_files(self, dataset, folder):
        """Raises if the run's image folder no longer holds, at the run's positions, the
        files it trained on: the samples, splits and labels would silently be others'."""
        if not os.path.isfile(self.join(self.TRAINING_LABELS)):
            return
        labels = self.training_labels()
        files = getattr(dataset, "train_files", None)
        if "files" not in labels or files is None or dataset.encoded:
            # Nothing to compare: no record, or the folder read into memory (no paths kept).
            return
        indices, then = labels["indices"], labels["files"]
        changed = (
            np.flatnonzero(training_files(dataset, indices, folder) != then)
            if len(files) > indices.max(initial=-1)
            else np.arange(len(then))
        )
        if len(changed):
            raise ValueError(
                f"The folder {folder!r} changed since the run in {self.path!r} trained on it: "
                f"{len(changed)} of its {len(then)} training images are no longer where they "
                f"were (the first: {str(then[changed[0]])!r}), so its "
                "samples and splits would be other images. Restore the folder as it was, or "
                "train again."
            )


def training_files(dataset, indices, folder):
    """The files of the training images at `indices`, relative to the image folder
    `folder`, for a dataset read from image files (`stream_image_folder`); None for any
    other (arrays, encoded tfds images), whose samples have no file.

    Returns:
        A str array `[len(indices)]`, or None.
    """
    files = getattr(dataset, "train_files", None)
    if files is None or dataset.encoded:
        return None
    return np.array([os.path.relpath(str(path), folder) for path in files[indices]])


def load_keras_file(path):
    """Loads a `.keras` file, whose model may be a `CLIDMUModel` with clidmu_tf's parts."""
    import keras

    # Keras finds a file's custom classes by their registration, which importing their
    # modules makes; `import clidmu_tf` alone imports none of them.
    import clidmu_tf.models  # noqa: F401

    return keras.saving.load_model(path)


def _recorded_pid(path):
    """The process id written in a lock file, or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            return int(handle.read().strip() or "x")
    except (OSError, ValueError):
        return None
