"""An optimiser step taken only when its gradients are finite and its batch counts."""

import tensorflow as tf
from keras import ops


def apply_if_usable(optimizer, gradients, variables, usable):
    """Applies `gradients` with `optimizer` unless they are non-finite or no replica's batch counts.

    The meta update is skipped, not applied with zero gradients: a zero gradient still moves
    the variables through momentum, Adam's moments and weight decay. A skipped step leaves the
    variables and the optimiser's state (its `iterations` included) as they were.

    Under a distribution strategy (one replica or several) the decision is taken once for all
    replicas (a step is taken when every replica's gradients are finite and at least one
    replica's batch counts), in a cross-replica context as `keras.optimizers.
    LossScaleOptimizer` does, because a branch that synchronises replicas cannot sit inside
    a per-replica conditional.

    Args:
        optimizer: a built Keras optimiser.
        gradients: list of tensors aligned with `variables`; None entries are read as zero.
        variables: the variables to update.
        usable: boolean scalar tensor, whether this replica's batch should count.

    Returns:
        A float32 scalar, 1.0 when the step was taken and 0.0 when it was skipped.
    """
    gradients = [
        ops.zeros_like(variable) if gradient is None else gradient
        for gradient, variable in zip(gradients, variables)
    ]
    finite = ops.all(ops.stack([ops.all(ops.isfinite(gradient)) for gradient in gradients]))
    usable = ops.convert_to_tensor(usable, "bool")

    def apply():
        optimizer.apply(gradients, variables)
        return ops.ones((), "float32")

    def skip():
        return ops.zeros((), "float32")

    # Under any strategy but the default one, even with a single replica, `optimizer.apply`
    # synchronises through `merge_call`, which cannot sit inside a conditional: only the
    # default strategy may take the plain `cond`.
    if not tf.distribute.has_strategy():
        return ops.cond(ops.logical_and(finite, usable), apply, skip)

    def decide_across_replicas(distribution, gradients, finite, usable):
        every_finite = ops.all(ops.stack(distribution.experimental_local_results(finite)))
        any_usable = ops.any(ops.stack(distribution.experimental_local_results(usable)))

        def apply_on_every_replica():
            distribution.extended.call_for_each_replica(
                optimizer.apply, args=(gradients, variables)
            )
            return ops.ones((), "float32")

        return ops.cond(ops.logical_and(every_finite, any_usable), apply_on_every_replica, skip)

    return tf.distribute.get_replica_context().merge_call(
        decide_across_replicas, args=(gradients, finite, usable)
    )
