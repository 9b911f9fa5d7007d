import keras

from clidmu_tf.validation import invalid_value


def from_model(model, feature_layer=None):
    """Adapts a user's Keras model into a backbone with `logits` and `features` outputs.

    A model that already returns a dict with `"logits"` and `"features"` is returned as is.
    Otherwise the model must be functional (or Sequential), its single output is taken as the
    logits, and `feature_layer` names the layer whose output feeds the classifier.

    Args:
        model: a `keras.Model`.
        feature_layer: name of the layer whose output is the feature vector; required unless
            the model already returns the dict.

    Returns:
        A Keras model whose output is `{"logits": [B, C], "features": [B, D]}`.

    Raises:
        ValueError: if the model has no usable outputs, `feature_layer` is missing or unknown,
            or the outputs are not rank 2.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    >>> user_model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    >>> backbone = from_model(user_model, feature_layer="hidden")
    >>> sorted(backbone.output)
    ['features', 'logits']
    """
    if not isinstance(model, keras.Model):
        raise invalid_value("model", "a keras.Model", model)
    output = _symbolic_output(model)
    if output is None:
        raise ValueError(
            "A subclassed model cannot be adapted: build it with the functional API, or pass "
            "it straight to CLIDMUModel with a call() that returns {'logits': ..., "
            f"'features': ...}}. Received: model={model.name!r}"
        )
    if isinstance(output, dict):
        missing = sorted({"logits", "features"} - set(output))
        if missing:
            raise ValueError(
                "A backbone that returns a dict needs the keys 'logits' and 'features'. "
                f"Received: a model with outputs {sorted(output)}"
            )
        backbone = model
    else:
        if feature_layer is None:
            raise ValueError(
                f"Model {model.name!r} does not return {{'logits', 'features'}}; pass "
                "`feature_layer`, the name of the layer whose output feeds the classifier. "
                "Received: feature_layer=None"
            )
        names = [layer.name for layer in model.layers]
        if feature_layer not in names:
            raise invalid_value("feature_layer", f"the name of a layer of the model {names}", feature_layer)
        features = model.get_layer(feature_layer).output
        backbone = keras.Model(
            model.inputs, {"logits": model.outputs[0], "features": features}, name=model.name
        )
    for key in ("logits", "features"):
        if len(backbone.output[key].shape) != 2:
            raise ValueError(
                f"The backbone's `{key}` output must be rank 2 [batch, size]. "
                f"Received: shape {tuple(backbone.output[key].shape)}"
            )
    return backbone


def _symbolic_output(model):
    """The symbolic output of a functional or Sequential model; None for a subclassed one."""
    try:
        return model.output
    except (AttributeError, ValueError):
        return None
