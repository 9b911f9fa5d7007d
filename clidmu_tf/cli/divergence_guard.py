"""The callback that stops a `train` run at the first non-finite loss."""

import keras
import numpy as np


class DivergenceGuard(keras.callbacks.TerminateOnNaN):
    """Keras's `TerminateOnNaN`, but raising: training stops at the first batch whose loss
    is NaN or infinite, before the epoch's end is backed up or snapshotted, and the run fails
    with a message that names the divergence and the learning rate."""

    def __init__(self, learning_rate, name):
        super().__init__()
        self.learning_rate = learning_rate
        self.name = name
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise RuntimeError(
                f"Training diverged: the {self.name} loss became {float(loss)} in epoch "
                f"{self.epoch}, batch {batch + 1}, at --learning-rate {self.learning_rate}. "
                "Lower --learning-rate. The snapshots of the epochs before are kept and can "
                "be exported with `clidmu-tf export`."
            )
