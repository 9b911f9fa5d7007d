"""The callback that writes each epoch of a `train` run into its report as the epoch ends."""

import keras


class EpochRecorder(keras.callbacks.Callback):
    """Appends each epoch's logs to a list and saves the partial report."""

    # Validation runs on the test split, so Keras's `val_` metrics are the test metrics.
    RENAMES = {"val_accuracy": "test_accuracy", "val_loss": "test_loss", "val_clid": "test_clid"}

    def __init__(self, history, report):
        super().__init__()
        self.history = history
        self.report = report

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1}
        for name, value in (logs or {}).items():
            entry[self.RENAMES.get(name, name)] = float(value)
        self.history.append(entry)
        self.report.save()
