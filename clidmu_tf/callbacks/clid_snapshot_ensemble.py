import json
import operator
import os

import keras

from clidmu_tf.atomic_files import save_weights_atomically
from clidmu_tf.callbacks import snapshot_store
from clidmu_tf.metrics.clid import CLID
from clidmu_tf.model_inputs import check_model_inputs, input_batches
from clidmu_tf.validation import (
    check_bool,
    check_positive_float,
    check_positive_int,
    invalid_value,
)

DEFAULT_TEMPERATURE = 0.5


class CLIDSnapshotEnsemble(keras.callbacks.Callback):
    """Keeps the epochs with the lowest CLID on the meta set (or on held-out inputs) and
    ensembles them.

    After each epoch the callback scores the model with CLID over the whole meta set, in
    inference mode, in batches of `batch_size`, each batch weighted by its size (the paper's
    snapshot rule, method section 6). It keeps the `top_k` epochs with the lowest CLID seen so
    far (a tie goes to the earlier epoch) as weight files in `directory`, and
    `build_ensemble()` returns a Keras model that averages their logits.

    Everything lives on disk: each snapshot is a `.weights.h5` file of the backbone, written
    to a temporary name and renamed into place, and a JSON manifest (`clid_snapshots.json`,
    rewritten the same way after each epoch) lists the kept epochs with their CLID, every
    epoch's CLID, and the backbone's config. A crash therefore never leaves a half-written
    snapshot, and `load_snapshot_ensemble(directory)` rebuilds the ensemble in another
    process. A snapshot file is deleted only when a better epoch evicts it from the top k;
    other files in `directory` are never touched.

    The per-epoch CLID is added to the epoch logs as `monitor` (`meta_clid` by default; so
    it appears in the `History`, the progress bar, and callbacks listed after this one, such
    as `EarlyStopping` or `CSVLogger`) and to `meta_clid.csv` in `directory`.

    The paper scores the meta set, which is part of the training set. A network that
    memorises wrong labels keeps lowering CLID on the samples it trained on while its
    accuracy falls, so the snapshots can follow the memorisation down; scoring inputs held
    out of training (`make_training_data(selection_size=...)`'s `selection_stream`, with
    `monitor="held_out_clid"`) resists it (BENCHMARKS.md, "Memorisation and selection").

    Epochs are numbered from 1, like `ModelCheckpoint`'s file names. To continue a run in a
    new process, pass `resume=True` and `fit(..., initial_epoch=...)`; an epoch that is run
    again replaces its earlier record.

    Args:
        meta_data: the meta set's inputs (no labels): an array of shape `[N, ...]` (a dict
            or tuple of such arrays for a multi-input backbone), or a finite
            `tf.data.Dataset` of input batches (or of tuples whose first item is the input
            batch), used batch by batch as it comes.
        top_k: positive int, how many epochs to keep (5 in the paper).
        directory: where the snapshots, the manifest and the CSV are written; created if
            absent.
        batch_size: positive int, the batch size used to score an array `meta_data` (the
            meta batch size, 100 in the paper). CLID compares the samples of a batch with each
            other, so batches of a single sample are left out of the average.
        temperature: positive float, CLID's temperature; defaults to the model's
            `temperature` attribute (a `CLIDMUModel`'s), else 0.5.
        resume: bool; if `directory` already holds a manifest, `True` continues from it
            (its snapshots compete with the new epochs) and `False` refuses the directory.
        monitor: str, the name of the per-epoch CLID in the epoch logs, the manifest and the
            CSV (`"meta_clid"`; `"held_out_clid"` when `meta_data` is held out of training);
            not a name the model logs itself (`"loss"`, `"val_..."`, its metrics).

    Raises:
        ValueError: for a non-positive `top_k`, `batch_size` or `temperature`, a `monitor`
            that is not a name of its own (at an epoch's end if the model logs it), a
            `meta_data`
            with fewer than 2 samples or holding NaN or inf, an infinite dataset, or a
            directory that already holds snapshots while `resume=False`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from clidmu_tf import CLIDMUModel, backbones
    >>> from clidmu_tf.callbacks import CLIDSnapshotEnsemble
    >>> x = np.random.rand(60, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 60).astype("int32")
    >>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    >>> meta = tf.data.Dataset.from_tensor_slices(x[:40]).batch(20).repeat()
    >>> model = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(16,)), seed=0)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1))
    >>> snapshots = CLIDSnapshotEnsemble(x[:40], top_k=2, directory="snapshots",
    ...                                  batch_size=20)  # doctest: +SKIP
    >>> history = model.fit(tf.data.Dataset.zip((train, meta)), epochs=3,
    ...                     callbacks=[snapshots], verbose=0)  # doctest: +SKIP
    >>> len(history.history["meta_clid"])  # doctest: +SKIP
    3
    >>> snapshots.build_ensemble().predict(x, verbose=0).shape  # doctest: +SKIP
    (60, 3)

    Reference:
        Hu et al., "CLID-MU: Cross-Layer Information Divergence Based Meta Update Strategy
        for Learning with Noisy Labels", KDD 2025.
    """

    def __init__(
        self,
        meta_data,
        top_k=5,
        directory="clid_snapshots",
        batch_size=100,
        temperature=None,
        resume=False,
        monitor="meta_clid",
    ):
        super().__init__()
        if (
            not isinstance(monitor, str)
            or not monitor.isidentifier()
            or monitor == "loss"
            or monitor.startswith("val_")
        ):
            # Keras's own log names would be overwritten (checked again at each epoch's end
            # against what the model logs).
            raise invalid_value(
                "monitor", "a log name of its own such as 'meta_clid', not a Keras log", monitor
            )
        self.monitor = monitor
        resume = check_bool("resume", resume)
        self.top_k = check_positive_int("top_k", top_k)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.temperature = None if temperature is None else check_positive_float(
            "temperature", temperature
        )
        self.meta_data = _check_meta_data(meta_data)
        try:
            self.directory = os.fspath(directory)
        except TypeError:
            raise invalid_value("directory", "a path", directory) from None
        manifest_path = os.path.join(self.directory, snapshot_store.MANIFEST_NAME)
        if os.path.exists(manifest_path) and not resume:
            raise ValueError(
                f"The directory {self.directory!r} already holds CLID snapshots "
                f"({snapshot_store.MANIFEST_NAME}). Pass resume=True to continue that run, or "
                f"choose another directory. Received: resume={resume!r}"
            )
        self.resume = resume
        self._manifest = None

    @property
    def snapshots(self):
        """The kept epochs, lowest CLID first: a list of `{"epoch", "clid", "file"}`."""
        return [dict(entry) for entry in self._manifest["snapshots"]] if self._manifest else []

    @property
    def clid_history(self):
        """Every scored epoch's CLID: a dict `{epoch: clid}` in epoch order."""
        history = self._manifest["history"] if self._manifest else []
        return {entry["epoch"]: entry["clid"] for entry in history}

    def on_train_begin(self, logs=None):
        backbone = self._scored_model()
        if self.temperature is None:
            self.temperature = float(getattr(self.model, "temperature", DEFAULT_TEMPERATURE))
        backbone_config = keras.saving.serialize_keras_object(backbone)
        # JSON round trip: the manifest stores the config as JSON, so compare like with like.
        backbone_config = _as_json(backbone_config)
        if self._manifest is None:
            self._manifest = self._initial_manifest(backbone_config)
        if self._manifest["backbone"] != backbone_config:
            raise ValueError(
                f"The snapshots in {self.directory!r} were taken from a different backbone "
                "than the one being trained. Choose another directory."
            )
        if self._manifest.get("monitor", "meta_clid") != self.monitor:
            raise ValueError(
                f"The snapshots in {self.directory!r} were ranked by "
                f"{self._manifest.get('monitor')!r}, not comparable with monitor="
                f"{self.monitor!r}. Choose another directory."
            )
        if self._manifest["temperature"] != self.temperature:
            raise ValueError(
                f"The snapshots in {self.directory!r} were scored with CLID at temperature "
                f"{self._manifest['temperature']}, which is not comparable with "
                f"temperature={self.temperature}. Choose another directory."
            )

    def _initial_manifest(self, backbone_config):
        manifest_path = os.path.join(self.directory, snapshot_store.MANIFEST_NAME)
        if os.path.exists(manifest_path):
            return snapshot_store.read_snapshot_manifest(self.directory)
        return {
            "format": snapshot_store.MANIFEST_FORMAT,
            "version": snapshot_store.MANIFEST_VERSION,
            "monitor": self.monitor,
            "top_k": self.top_k,
            "temperature": self.temperature,
            "backbone": backbone_config,
            "snapshots": [],
            "history": [],
        }

    def on_epoch_end(self, epoch, logs=None):
        epoch_number = epoch + 1
        backbone = self._scored_model()
        clid = self.score(backbone)
        if logs is not None:
            if self.monitor in logs:
                raise ValueError(
                    f"Received monitor={self.monitor!r}, the name of a value the model already "
                    f"logs ({sorted(logs)}); CLID would replace it. Choose another name, such "
                    "as 'meta_clid' or 'held_out_clid'."
                )
            logs[self.monitor] = clid

        manifest = self._manifest
        # An epoch that is run again (a resumed run) replaces its earlier record.
        earlier = [s for s in manifest["snapshots"] if s["epoch"] != epoch_number]
        replaced = [s for s in manifest["snapshots"] if s["epoch"] == epoch_number]
        candidate = {
            "epoch": epoch_number,
            "clid": clid,
            "file": snapshot_store.snapshot_file_name(epoch_number),
        }
        kept = snapshot_store.rank_snapshots(earlier + [candidate], self.top_k)
        os.makedirs(self.directory, exist_ok=True)
        if candidate in kept:
            save_weights_atomically(
                backbone, os.path.join(self.directory, candidate["file"])
            )
        history = [entry for entry in manifest["history"] if entry["epoch"] != epoch_number]
        history.append({"epoch": epoch_number, "clid": clid})
        history.sort(key=operator.itemgetter("epoch"))
        kept_files = {entry["file"] for entry in kept}
        evicted = [s for s in earlier + replaced if s["file"] not in kept_files]

        # The manifest is replaced before any file is deleted, so it never names a file that
        # is gone; a crash in between leaves an unlisted file, never a broken ensemble.
        manifest.update(top_k=self.top_k, snapshots=kept, history=history)
        snapshot_store.write_manifest(self.directory, manifest)
        snapshot_store.write_clid_csv(self.directory, history, self.monitor)
        for entry in evicted:
            path = os.path.join(self.directory, entry["file"])
            if os.path.exists(path):
                os.remove(path)

    def score(self, model=None):
        """CLID of a model over the whole meta set, in inference mode.

        Args:
            model: a Keras model returning `{"logits", "features"}`; defaults to the trained
                model's backbone.

        Returns:
            A Python float: the mean of the batches' CLID, weighted by batch size.

        Raises:
            ValueError: if the meta set yields no batch of at least 2 samples, or the model
                does not return `{"logits", "features"}`.
        """
        model = self._scored_model() if model is None else model
        temperature = DEFAULT_TEMPERATURE if self.temperature is None else self.temperature
        metric = CLID(temperature=temperature)
        for batch in input_batches(self.meta_data, self.batch_size, model):
            outputs = model(batch, training=False)
            if not isinstance(outputs, dict) or not {"logits", "features"} <= set(outputs):
                raise ValueError(
                    "CLIDSnapshotEnsemble scores a model that returns {'logits', 'features'}: "
                    "a CLIDMUModel (its backbone is scored) or a backbone. Received: a model "
                    f"{model.name!r} with outputs of type {type(outputs).__name__}"
                )
            # The metric leaves out batches of fewer than 2 samples (see `batch_clid`).
            metric.update_state(None, outputs)
        if float(metric.count.numpy()) == 0:
            raise ValueError(
                "The meta set yielded no batch of at least 2 samples; CLID compares samples "
                "within a batch. Use a larger `batch_size` or meta set."
            )
        return float(metric.result())

    def build_ensemble(self, name="clid_snapshot_ensemble"):
        """The ensemble of the kept snapshots, rebuilt from `directory`.

        Args:
            name: name of the returned model.

        Returns:
            A functional `keras.Model` whose output is the mean of the members' logits,
            `[N, C]`. See `load_snapshot_ensemble`.

        Raises:
            FileNotFoundError: before any snapshot was written, or if a snapshot file is gone.
            ValueError: if the manifest or a snapshot file is corrupt.
        """
        return snapshot_store.load_snapshot_ensemble(self.directory, name=name)

    def _scored_model(self):
        backbone = getattr(self.model, "backbone", None)
        return backbone if isinstance(backbone, keras.Model) else self.model

def _as_json(value):
    return json.loads(json.dumps(value))


def _check_meta_data(meta_data):
    # CLID compares the samples of a batch with each other.
    return check_model_inputs(meta_data, "meta_data", min_samples=2)
