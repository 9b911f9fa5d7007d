import keras
from keras import ops


@keras.saving.register_keras_serializable(package="clidmu_tf")
class DenseLogits(keras.layers.Layer):
    """The pre-activation output of a `Dense` layer, computed with that layer's own weights.

    `from_model` puts it in place of a last `Dense(activation="softmax")` layer: CLID-MU
    needs logits (its cross-entropy and CLID apply the softmax themselves), and the wrapped
    layer keeps its variables, so the user's model is trained along with the backbone.

    Args:
        dense: a `keras.layers.Dense` layer.
        **kwargs: forwarded to `keras.layers.Layer`.

    Example:

    >>> import numpy as np
    >>> dense = keras.layers.Dense(3, activation="softmax")
    >>> x = np.ones((2, 4), "float32")
    >>> probabilities = dense(x)
    >>> logits = DenseLogits(dense)(x)
    >>> bool(np.allclose(keras.ops.softmax(logits), probabilities, atol=1e-6))
    True
    """

    def __init__(self, dense, **kwargs):
        if not isinstance(dense, keras.layers.Dense):
            raise ValueError(
                "Received an invalid value for `dense`, expected a keras.layers.Dense layer. "
                f"Received: dense={dense!r}"
            )
        kwargs.setdefault("dtype", dense.dtype_policy)
        super().__init__(**kwargs)
        self.dense = dense

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)

    def call(self, inputs):
        logits = ops.matmul(inputs, ops.cast(self.dense.kernel, self.compute_dtype))
        if self.dense.use_bias:
            logits = logits + ops.cast(self.dense.bias, self.compute_dtype)
        return logits

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.dense.units)

    def get_config(self):
        return {**super().get_config(), "dense": keras.saving.serialize_keras_object(self.dense)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["dense"] = keras.saving.deserialize_keras_object(config["dense"])
        return cls(**config)
