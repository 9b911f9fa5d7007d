import keras

from clidmu_tf.backbones.from_model import _symbolic_output


def logits_layer(backbone):
    """The dense layer that maps a backbone's features to its logits.

    The head-only virtual step of `CLIDMUModel` (`virtual_step="head"`) needs the logits to
    be an affine function of the features, `logits = features @ kernel + bias`, computed by
    one `keras.layers.Dense` layer with a linear activation applied straight to the
    `features` output. The bundled backbones end that way, and so does a model adapted with
    `from_model` whose last layer is a `Dense` on `feature_layer`.

    Args:
        backbone: a functional Keras model whose output is `{"logits": [B, C],
            "features": [B, D]}`.

    Returns:
        The `keras.layers.Dense` layer; its `kernel` is `[D, C]`, its `bias` `[C]` or None.

    Raises:
        ValueError: if the logits are not such a layer's output on the features (another
            layer, an activation, a layer in between, a nested model, a subclassed
            backbone), or if the layer is frozen, quantised or has LoRA weights.
    """
    outputs = _symbolic_output(backbone)
    if outputs is None:
        raise ValueError(
            "virtual_step='head' needs a functional backbone whose logits are a Dense layer "
            "applied to its features. Received: a subclassed backbone "
            f"{backbone.name!r}; use virtual_step='full'"
        )
    history = getattr(outputs["logits"], "_keras_history", None)
    layer = history.operation if history is not None else None
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(
            "virtual_step='head' needs the backbone's logits to be the output of a Dense layer "
            f"on its features. Received: logits computed by {_describe(layer)} in backbone "
            f"{backbone.name!r}; use virtual_step='full'"
        )
    node = layer._inbound_nodes[history.node_index]
    if len(node.input_tensors) != 1 or node.input_tensors[0] is not outputs["features"]:
        raise ValueError(
            f"virtual_step='head' needs the logits layer {layer.name!r} to be applied straight "
            "to the `features` output (no layer in between). Received: a backbone "
            f"{backbone.name!r} whose logits layer reads another tensor; use "
            "virtual_step='full'"
        )
    if layer.activation is not keras.activations.linear:
        raise ValueError(
            f"virtual_step='head' needs the logits layer {layer.name!r} to be affine. Received: "
            f"activation={keras.activations.serialize(layer.activation)!r}"
        )
    affine_variables = [v for v in (layer.kernel, layer.bias) if v is not None]
    if not layer.trainable or [id(v) for v in layer.trainable_variables] != [
        id(v) for v in affine_variables
    ]:
        raise ValueError(
            f"virtual_step='head' updates the trainable kernel and bias of the logits layer "
            f"{layer.name!r}. Received: a layer that is frozen, quantised or has LoRA "
            f"weights (trainable variables {[v.path for v in layer.trainable_variables]})"
        )
    return layer


def _describe(layer):
    if layer is None:
        return "no layer"
    return f"{type(layer).__name__} {layer.name!r}"
