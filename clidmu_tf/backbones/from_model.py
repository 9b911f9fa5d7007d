import warnings

import keras

from clidmu_tf.backbones.dense_logits import DenseLogits
from clidmu_tf.validation import invalid_value


def from_model(model, feature_layer=None):
    """Adapts a user's Keras model into a backbone with `logits` and `features` outputs.

    A model that already returns a dict with `"logits"` and `"features"` is returned as is.
    Otherwise the model must be functional (or Sequential), its single output is taken as the
    logits, and `feature_layer` names the layer whose output feeds the classifier. Models
    with several inputs (a dict or a tuple of inputs) keep their input structure.

    CLID-MU needs logits. When the logits output is a softmax, the backbone reads the
    pre-softmax values instead and a warning says so: for a last `Dense(activation=
    "softmax")` layer, the same layer's pre-activation (`DenseLogits`, sharing its weights);
    for a last `Softmax` or `Activation("softmax")` layer, that layer's input.

    Args:
        model: a `keras.Model`.
        feature_layer: name of the layer whose output is the feature vector; required unless
            the model already returns the dict.

    Returns:
        A Keras model whose output is `{"logits": [B, C], "features": [B, D]}`.

    Raises:
        ValueError: if the model has no usable outputs, `feature_layer` is missing or unknown,
            the outputs are not rank 2, or the logits come out of a softmax that cannot be
            unwrapped (inside a nested model, or along another axis).

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
            "A subclassed model cannot be a backbone (CLIDMUModel reads a backbone's "
            "symbolic outputs): build it with the functional API, returning {'logits': ..., "
            "'features': ...} or its logits together with `feature_layer`. Received: "
            f"model={model.name!r}"
        )
    if isinstance(output, dict):
        missing = sorted({"logits", "features"} - set(output))
        if missing:
            raise ValueError(
                "A backbone that returns a dict needs the keys 'logits' and 'features'. "
                f"Received: a model with outputs {sorted(output)}"
            )
        logits = _pre_softmax(output["logits"], model.name)
        backbone = model
        if logits is not output["logits"]:
            backbone = keras.Model(
                _symbolic_input(model), {**output, "logits": logits}, name=model.name
            )
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
        logits = _pre_softmax(model.outputs[0], model.name)
        backbone = keras.Model(
            _symbolic_input(model), {"logits": logits, "features": features}, name=model.name
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
        pass
    # A Sequential model built from an Input has `outputs` but no `output` in Keras 3.
    outputs = getattr(model, "_outputs_struct", None) or getattr(model, "outputs", None)
    return outputs[0] if isinstance(outputs, list) and len(outputs) == 1 else None


def _symbolic_input(model):
    """The model's inputs in their structure (a tensor, a dict or a tuple of tensors)."""
    try:
        return model.input
    except (AttributeError, ValueError):
        inputs = model.inputs
        return inputs[0] if len(inputs) == 1 else inputs


def _is_softmax(function):
    return getattr(function, "__name__", None) == "softmax"


def _pre_softmax(tensor, model_name):
    """The logits behind a symbolic `tensor` that a softmax produced; `tensor` otherwise."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return tensor
    layer = history.operation
    node = layer._inbound_nodes[history.node_index]
    if isinstance(layer, keras.layers.Dense) and _is_softmax(layer.activation):
        logits = DenseLogits(layer, name=f"{layer.name}_logits")(node.input_tensors[0])
        source = f"layer {layer.name!r} has activation='softmax'; its pre-activation output"
    elif (
        (isinstance(layer, keras.layers.Softmax) and layer.axis in (-1, (-1,), [-1]))
        or (isinstance(layer, keras.layers.Activation) and _is_softmax(layer.activation))
    ) and len(node.input_tensors) == 1:
        logits = node.input_tensors[0]
        source = f"its last layer {layer.name!r} is a softmax; that layer's input"
    elif isinstance(layer, keras.layers.Softmax) or _ends_in_softmax(layer):
        raise ValueError(
            f"The output of model {model_name!r} comes out of a softmax in layer "
            f"{layer.name!r}, which cannot be unwrapped here. CLID-MU needs logits: make the "
            "model's last layer linear (Dense without activation) and apply softmax at "
            "prediction time."
        )
    else:
        return tensor
    warnings.warn(
        f"Model {model_name!r} outputs probabilities: {source} is used as the logits, "
        "because CLID-MU's cross-entropy and CLID apply the softmax themselves. The trained "
        "model predicts logits; apply softmax to them for probabilities.",
        stacklevel=3,
    )
    return logits


def _ends_in_softmax(layer):
    """True for a nested model (or a layer) whose own output is a softmax."""
    if _is_softmax(getattr(layer, "activation", None)):
        return True
    if isinstance(layer, keras.Model):
        # `outputs` are the nested model's own symbolic outputs (`output` would be the
        # outer graph's tensor, produced by the nested model itself).
        outputs = getattr(layer, "outputs", None)
        if isinstance(outputs, list) and len(outputs) == 1:
            history = getattr(outputs[0], "_keras_history", None)
            return history is not None and _ends_in_softmax(history.operation)
    return False
