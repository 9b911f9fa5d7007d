import keras
from keras import layers

from clidmu_tf.backbones.blocks import backbone_model, batch_norm, check_backbone_args, conv


def small_cnn(input_shape, num_classes, widths=(32, 64, 128), name="small_cnn"):
    """A small convolutional backbone for quick runs and tests.

    Each stage is two 3x3 convolutions with BatchNorm and ReLU; stages after the first
    downsample with a stride-2 convolution rather than max-pooling, because the meta-gradient
    differentiates the network twice and the second derivative of max-pooling is slow on CPU.
    Global average pooling gives the feature vector.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: number of classes.
        widths: number of filters of each stage.
        name: name of the model.

    Returns:
        A Keras model whose output is `{"logits": [B, num_classes], "features": [B, widths[-1]]}`.

    Example:

    >>> model = small_cnn((32, 32, 3), num_classes=10)
    >>> model.output["features"].shape
    (None, 128)
    """
    shape = check_backbone_args(input_shape, num_classes)
    inputs = keras.Input(shape, name="inputs")
    x = inputs
    for stage, filters in enumerate(widths):
        for block in range(2):
            strides = 2 if stage > 0 and block == 0 else 1
            x = conv(filters, strides=strides, name=f"conv_{stage}_{block}")(x)
            x = batch_norm(name=f"bn_{stage}_{block}")(x)
            x = layers.ReLU()(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    return backbone_model(inputs, features, num_classes, name)
