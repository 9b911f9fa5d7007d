import math

import keras
from keras import layers

from clidmu_tf.validation import check_choice, check_positive_int

INITIALIZATIONS = ("pytorch", "keras")


def _fan_in_uniform(fan_in, seed):
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit, seed=seed)


@keras.saving.register_keras_serializable(package="clidmu_tf")
class MetaWeightNet(keras.Model):
    """Meta-Weight-Net: maps a sample's training loss to a weight in (0, 1).

    An MLP `1 -> hidden_units -> 1` with ReLU and a sigmoid output. Its input is the
    (detached) per-sample cross-entropy of shape `[B, 1]`; its output the weight `[B, 1]`.

    The default initialisation is the one the CLID-MU authors' network gets from PyTorch's
    `Linear`: weights and biases uniform in `+-1/sqrt(fan_in)`. With Keras's default
    (Glorot weights, zero biases) the method lost most of its gain in a measurement on a
    small benchmark (see the project's method notes), so `"keras"` is only an option.

    Args:
        hidden_units: width of the hidden layer (100 in the paper).
        initialization: `"pytorch"` (default) or `"keras"`.
        seed: seed of the initialisers.
        **kwargs: forwarded to `keras.Model`; `dtype` defaults to `"float32"` (float32 maths
            under mixed precision).

    Example:

    >>> import numpy as np
    >>> net = MetaWeightNet(seed=0)
    >>> net(np.array([[0.1], [2.0]], dtype="float32")).shape
    TensorShape([2, 1])

    Reference:
        Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting",
        NeurIPS 2019.
    """

    def __init__(self, hidden_units=100, initialization="pytorch", seed=None, **kwargs):
        check_positive_int("hidden_units", hidden_units)
        check_choice("initialization", initialization, INITIALIZATIONS)
        # The meta-model's maths stay in float32 under mixed precision, like CLID's.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.initialization = initialization
        self.seed = seed
        if initialization == "pytorch":
            seeds = (None, None) if seed is None else (seed, seed + 1)
            hidden_init = {
                "kernel_initializer": _fan_in_uniform(1, seeds[0]),
                "bias_initializer": _fan_in_uniform(1, seeds[0]),
            }
            output_init = {
                "kernel_initializer": _fan_in_uniform(hidden_units, seeds[1]),
                "bias_initializer": _fan_in_uniform(hidden_units, seeds[1]),
            }
        else:
            hidden_init = {"kernel_initializer": keras.initializers.GlorotUniform(seed)}
            output_init = {"kernel_initializer": keras.initializers.GlorotUniform(seed)}
        self.hidden = layers.Dense(
            hidden_units, activation="relu", name="hidden", dtype=self.dtype_policy, **hidden_init
        )
        self.weight_head = layers.Dense(
            1, activation="sigmoid", name="weight", dtype=self.dtype_policy, **output_init
        )

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.weight_head.build((*input_shape[:-1], self.hidden_units))

    def call(self, losses):
        return self.weight_head(self.hidden(losses))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "initialization": self.initialization,
            "seed": self.seed,
        }
