"""The layout of a `clidmu-tf train` run directory, and how to read a finished run back."""

import os
import shutil

import numpy as np

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
    - `training_labels.npz`: which samples were trained on, with their given (noisy) and
      true labels and the meta-model's per-sample weights.
    - `label_errors.csv`: the training samples the meta-model trusts least.

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

    def __init__(self, path):
        self.path = os.fspath(path)

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

    def check_writable(self, overwrite):
        """Checks that a new run may be written here, without changing anything.

        Args:
            overwrite: whether an earlier run in the directory may be replaced.

        Raises:
            ValueError: if the path is a file; if the directory is not empty and `overwrite`
                is False; or if it is not empty and holds no earlier run, which `overwrite`
                never deletes.
        """
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(
                "Received an invalid value for `--out`, expected a directory. Received: "
                f"--out={self.path!r}, which is a file"
            )
        if not os.path.isdir(self.path) or not os.listdir(self.path):
            return
        if not overwrite:
            raise ValueError(
                f"The output directory {self.path!r} exists and is not empty. Pass "
                "--overwrite to replace the run in it, or choose another --out."
            )
        if not self.is_run:
            raise ValueError(
                f"The output directory {self.path!r} is not empty and holds no clidmu-tf run "
                "(no report.json), so --overwrite will not delete it. Choose another --out."
            )

    def create(self, overwrite):
        """Creates the directory, replacing an earlier run when `overwrite` allows it."""
        self.check_writable(overwrite)
        if os.path.isdir(self.path) and os.listdir(self.path):
            shutil.rmtree(self.path)
        os.makedirs(self.plots, exist_ok=True)

    def report(self):
        """The finished run's report (see `RunReport.load`)."""
        return RunReport.load(self.path)

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

    def save_training_labels(self, *, indices, given, true, weights=None):
        """Records the trained samples' positions, given and true labels, and weights."""
        arrays = {"indices": indices, "given": given, "true": true}
        if weights is not None:
            arrays["weights"] = weights
        np.savez(self.join(self.TRAINING_LABELS), **arrays)

    def training_labels(self):
        """The arrays `save_training_labels` wrote, as a dict."""
        path = self.join(self.TRAINING_LABELS)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"The run in {self.path!r} has no {self.TRAINING_LABELS}: it did not get as far "
                "as loading its data."
            )
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}

    def load_dataset(self):
        """Loads the run's dataset again from its configuration, as training loaded it."""
        from clidmu_tf.cli.data_sources import load_source_dataset

        config = self.report()["config"]
        image_size = config.get("image_size")
        return load_source_dataset(
            config["dataset"],
            data_dir=config.get("data_dir"),
            image_size=None if image_size is None else tuple(image_size),
            label_file=config.get("label_file"),
        )


def load_keras_file(path):
    """Loads a `.keras` file, whose model may be a `CLIDMUModel` with clidmu_tf's parts."""
    import keras

    # Keras finds a file's custom classes by their registration, which importing their
    # modules makes; `import clidmu_tf` alone imports none of them.
    import clidmu_tf.models  # noqa: F401

    return keras.saving.load_model(path)
