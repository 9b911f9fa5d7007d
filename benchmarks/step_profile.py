"""Where a CLIDMUModel training step spends its time, part by part.

Each part of the step on the `small_cnn` backbone (32x32x3 inputs, batch 100, meta batch
100) is compiled on its own with `tf.function` and timed in process CPU time, which other
processes on a shared machine do not inflate. The parts are cumulative:

- forward: the training batch's forward pass;
- forward + backward: what a plain cross-entropy step computes;
- fast forward + backward: the meta batch through fast weights, CLID, first-order gradient;
- meta gradients: the virtual step and the second-order meta-gradient (forward, recorded
  backward, fast pass, backward through the recorded backward);
- full step: `train_step` (meta gradients, meta update, real backward, updates, metrics).

    python benchmarks/step_profile.py --rounds 6
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from clidmu_tf import CLIDMUModel, backbones, clid_loss  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((100, 32, 32, 3), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, 100).astype("int32"))
    x_meta = tf.constant(rng.random((100, 32, 32, 3), dtype=np.float32))
    keras.utils.set_random_seed(0)
    model = CLIDMUModel(backbones.small_cnn((32, 32, 3), 10), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.build_optimizers()
    backbone = model.backbone
    variables = backbone.trainable_variables

    def cross_entropy(logits):
        return ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    @tf.function
    def forward():
        return backbone(x, training=True)["logits"]

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = cross_entropy(backbone(x, training=True)["logits"])
        return tape.gradient(loss, variables)

    @tf.function
    def fast_forward_backward():
        values = [v.value for v in variables]
        with tf.GradientTape() as tape:
            tape.watch(values)
            outputs, _ = backbone.stateless_call(
                values, [v.value for v in backbone.non_trainable_variables], x_meta, training=True
            )
            loss = clid_loss(outputs["features"], outputs["logits"])
        return tape.gradient(loss, values)

    @tf.function
    def meta_gradients():
        with tf.GradientTape(persistent=True) as tape:
            outputs = backbone(x, training=True)
        return model.meta_gradients(tape, outputs, y, x_meta)

    @tf.function
    def full_step():
        return model.train_step(((x, y), x_meta))

    parts = [forward, forward_backward, fast_forward_backward, meta_gradients, full_step]
    for part in parts:
        part()
    times = {part.__name__: [] for part in parts}
    for _ in range(args.rounds):
        for part in parts:
            start = time.process_time()
            tf.nest.map_structure(lambda t: t.numpy(), part())
            times[part.__name__].append(time.process_time() - start)
    reference = np.median(times["forward_backward"])
    print(f"{'part':<24}{'CPU ms':>10}{'x fwd+bwd':>12}")
    for name, values in times.items():
        median = np.median(values)
        print(f"{name:<24}{1000 * median:>10.0f}{median / reference:>12.2f}")


if __name__ == "__main__":
    main()
