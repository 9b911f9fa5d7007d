import keras
import numpy as np
import tensorflow as tf

from clidmu_tf.metrics.clid import CLID
from clidmu_tf.validation import (
    check_class_ids,
    check_finite_inputs,
    check_positive_float,
    check_positive_int,
    invalid_value,
)


def held_out_scores(model, x, y=None, *, temperature=0.5, batch_size=100):
    """Scores a `CLIDMUModel` on held-out inputs, in inference mode.

    CLID is computed batch by batch (it compares the samples of a batch with each other) and
    averaged weighted by batch size. Because the batch composition and the temperature
    change its value, scores are comparable between models only at the same `temperature`,
    `batch_size` and sample order; the tuning tools fix all three for every trial.

    Args:
        model: a `CLIDMUModel` (anything with a `backbone` returning `{"logits",
            "features"}`).
        x: inputs, an array of shape `[N, ...]`.
        y: integer labels of shape `[N]`, or None. CLID never reads them.
        temperature: positive float, the temperature of CLID's feature side.
        batch_size: positive int, the size of the batches CLID is computed over.

    Returns:
        A dict of floats: `"clid"`, and with labels also `"loss"` (mean cross-entropy) and
        `"accuracy"`.

    Example:

    >>> import numpy as np
    >>> from clidmu_tf import CLIDMUModel, backbones
    >>> model = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(16,)), seed=0)
    >>> x = np.random.rand(30, 8).astype("float32")
    >>> sorted(held_out_scores(model, x, np.zeros(30, "int32"), batch_size=10))
    ['accuracy', 'clid', 'loss']
    """
    check_positive_float("temperature", temperature)
    check_positive_int("batch_size", batch_size)
    outputs = model.backbone.predict(x, batch_size=batch_size, verbose=0)
    logits = outputs["logits"].astype("float32")
    features = outputs["features"].astype("float32")
    clid = CLID(temperature=temperature)
    for start in range(0, len(logits), batch_size):
        stop = start + batch_size
        clid.update_state(None, {"features": features[start:stop], "logits": logits[start:stop]})
    scores = {"clid": float(clid.result())}
    if y is not None:
        labels = check_class_ids(y, "y", num_classes=logits.shape[-1], length=len(logits))
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True
        )
        scores["loss"] = float(np.mean(keras.ops.convert_to_numpy(cross_entropy)))
        scores["accuracy"] = float(np.mean(np.argmax(logits, axis=-1) == labels))
    return scores


class HeldOutValidation(keras.callbacks.Callback):
    """Adds scores on held-out data to the epoch logs, for tuners and other callbacks.

    At the end of each epoch it computes `held_out_scores` and writes them into the logs as
    `{prefix}clid`, and when labels are given `{prefix}loss` and `{prefix}accuracy`. Callbacks
    placed after it (keras-tuner's checkpointing, `EarlyStopping`, `History`) see the new
    entries, so they can serve as a tuning objective.

    With clean validation labels, `HeldOutValidation(x_val, y_clean, prefix="val_clean_")`
    adds `val_clean_accuracy`; with the noisy ones and `prefix="val_"` it gives the
    validation scores `CLIDMUHyperModel` searches with.

    Args:
        x: held-out inputs, an array of shape `[N, ...]`.
        y: integer labels of shape `[N]`, or None for label-free scoring (CLID only).
        prefix: string put before each score's name in the logs.
        temperature: positive float, CLID's temperature. Keep it the same for every model
            that is compared: CLID's scale depends on it.
        batch_size: positive int, the batch size CLID is computed over; also fixed across
            compared models.

    Raises:
        ValueError: for labels that are not integer class ids of shape `[N]` (one per
            input), inputs holding NaN or inf, an empty `prefix`, or a non-positive
            `temperature` or `batch_size`.

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from clidmu_tf import CLIDMUModel, backbones
    >>> model = CLIDMUModel(backbones.mlp((8,), 3, hidden_units=(16,)), seed=0)
    >>> model.compile()
    >>> x = np.random.rand(40, 8).astype("float32")
    >>> y = np.random.randint(0, 3, 40).astype("int32")
    >>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    >>> meta = tf.data.Dataset.from_tensor_slices(x).batch(20).repeat()
    >>> clean = HeldOutValidation(x, y, prefix="val_clean_", batch_size=20)
    >>> history = model.fit(tf.data.Dataset.zip((train, meta)), callbacks=[clean], verbose=0)
    >>> "val_clean_accuracy" in history.history
    True
    """

    def __init__(self, x, y=None, prefix="val_clean_", temperature=0.5, batch_size=100):
        super().__init__()
        check_finite_inputs(x, "x")
        if y is not None:
            y = check_class_ids(y, "y", length=len(tf.nest.flatten(x)[0]))
        if not isinstance(prefix, str) or not prefix:
            raise invalid_value("prefix", "a non-empty string", prefix)
        self.x = x
        self.y = y
        self.prefix = prefix
        self.temperature = check_positive_float("temperature", temperature)
        self.batch_size = check_positive_int("batch_size", batch_size)

    def on_epoch_end(self, epoch, logs=None):
        scores = held_out_scores(
            self.model, self.x, self.y, temperature=self.temperature, batch_size=self.batch_size
        )
        logs.update({self.prefix + name: value for name, value in scores.items()})
