import keras
from keras import layers

from clidmu_tf.backbones.blocks import backbone_model, check_backbone_args
from clidmu_tf.validation import invalid_value


def mlp(input_shape, num_classes, hidden_units=(256, 128), dropout=0.0, name="mlp"):
    """A multi-layer perceptron backbone.

    Args:
        input_shape: shape of one sample; it is flattened.
        num_classes: number of classes.
        hidden_units: widths of the hidden ReLU layers; the last one is the feature layer.
        dropout: dropout rate after each hidden layer.
        name: name of the model.

    Returns:
        A Keras model whose output is `{"logits": [B, num_classes], "features": [B, D]}`.

    Example:

    >>> model = mlp((8, 8, 1), num_classes=10, hidden_units=(32,))
    >>> sorted(model.output)
    ['features', 'logits']
    """
    shape = check_backbone_args(input_shape, num_classes)
    if not hidden_units:
        raise invalid_value("hidden_units", "a non-empty sequence of widths", hidden_units)
    if not 0.0 <= dropout < 1.0:
        raise invalid_value("dropout", "a float in [0, 1)", dropout)
    inputs = keras.Input(shape, name="inputs")
    x = layers.Flatten()(inputs)
    for index, units in enumerate(hidden_units):
        x = layers.Dense(units, activation="relu", name=f"dense_{index}")(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return backbone_model(inputs, x, num_classes, name)
