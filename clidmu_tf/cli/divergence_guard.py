"""The callback that stops a `train` run at the first non-finite loss."""

import keras
import numpy as np

# Label-free signals of an epoch that has diverged: the training loss, and CLID on the
# training batches and on the evaluation inputs (CLID reads no label, so the test labels
# still decide nothing).
EPOCH_SIGNALS = ("loss", "clid", "val_clid")


class DivergenceGuard(keras.callbacks.TerminateOnNaN):
    """Keras's `TerminateOnNaN`, but raising: training stops at the first batch whose loss
    is NaN or infinite, or at the end of an epoch whose loss or CLID is, before that epoch is
    backed up or snapshotted, and the run fails with a message that names the divergence,
    the learning rate and the snapshots that can still be exported.

    Args:
        learning_rate: the `--learning-rate` the run used, for the message.
        name: which model trains (`"method"` or `"baseline"`), for the message.
        kept_snapshots: a function returning the snapshot ensemble's kept entries
            (`[{"epoch", ...}]`), or None for a model that keeps none.
    """

    def __init__(self, learning_rate, name, kept_snapshots=None):
        super().__init__()
        self.learning_rate = learning_rate
        self.name = name
        self.kept_snapshots = kept_snapshots
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self._stop(f"the {self.name} loss became {float(loss)} in epoch {self.epoch}, "
                       f"batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        for signal in EPOCH_SIGNALS:
            value = (logs or {}).get(signal)
            if value is not None and not np.isfinite(float(value)):
                self._stop(f"the {self.name} model's {signal} was {float(value)} at the end "
                           f"of epoch {epoch + 1}")

    def _stop(self, what):
        kept = self.kept_snapshots() if self.kept_snapshots is not None else []
        if kept:
            epochs = ", ".join(str(entry["epoch"]) for entry in kept)
            snapshots = (
                f"The snapshots of epochs {epochs} are kept and can be exported with "
                "`clidmu-tf export`."
            )
        elif self.kept_snapshots is not None:
            snapshots = "No earlier epoch ended with a finite CLID, so no snapshot was kept."
        else:
            snapshots = ""
        raise RuntimeError(
            f"Training diverged: {what}, at --learning-rate {self.learning_rate}. Lower "
            f"--learning-rate. {snapshots}".rstrip()
        )
