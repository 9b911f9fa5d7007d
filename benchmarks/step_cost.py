"""Time of a CLIDMUModel fit step over a plain Keras fit step, side by side in one run.

Both models use the same `small_cnn` backbone on 32x32x3 inputs, batch 100, meta batch 100
(CLID objective, meta_every=1). Steps are timed after a warm-up, alternating between the two
models in rounds so that machine noise hits both alike; the figure is the ratio of medians.

    python benchmarks/step_cost.py --rounds 5 --steps 10
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from clidmu_tf import CLIDMUModel, backbones  # noqa: E402

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
BATCH = 100


def plain_model(seed, jit):
    keras.utils.set_random_seed(seed)
    backbone = backbones.small_cnn(INPUT_SHAPE, NUM_CLASSES)
    model = keras.Model(backbone.input, backbone.output["logits"])
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def clidmu_model(seed, meta_every, jit):
    keras.utils.set_random_seed(seed)
    model = CLIDMUModel(
        backbones.small_cnn(INPUT_SHAPE, NUM_CLASSES), meta_every=meta_every, seed=seed
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=jit)
    return model


def time_fit(model, dataset, steps):
    """Wall-clock and process CPU seconds per step (CPU time is robust to other processes)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--meta-every", type=int, default=1)
    parser.add_argument("--jit", action="store_true", help="XLA-compile both steps")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.random((BATCH * 4, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, len(x)).astype("int32")
    # Cached, repeated in-memory batches: the benchmark times the step, not the input.
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().repeat()
    meta = tf.data.Dataset.from_tensor_slices(x).batch(BATCH).cache().repeat()
    zipped = tf.data.Dataset.zip((train, meta)).prefetch(2)

    plain, clidmu = plain_model(0, args.jit), clidmu_model(0, args.meta_every, args.jit)
    time_fit(plain, train, 3)
    time_fit(clidmu, zipped, 3)
    plain_times, clidmu_times = [], []
    for _ in range(args.rounds):
        plain_times.append(time_fit(plain, train, args.steps))
        clidmu_times.append(time_fit(clidmu, zipped, args.steps))
    plain_wall, plain_cpu = np.median(plain_times, axis=0)
    clidmu_wall, clidmu_cpu = np.median(clidmu_times, axis=0)
    result = {
        "plain_step_ms": 1000 * float(plain_wall),
        "clidmu_step_ms": 1000 * float(clidmu_wall),
        "ratio": float(clidmu_wall / plain_wall),
        "plain_step_cpu_ms": 1000 * float(plain_cpu),
        "clidmu_step_cpu_ms": 1000 * float(clidmu_cpu),
        "cpu_ratio": float(clidmu_cpu / plain_cpu),
        "meta_every": args.meta_every,
        "jit_compile": args.jit,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "load_average": os.getloadavg()[0],
    }
    print(
        f"wall: plain Keras step {result['plain_step_ms']:.1f} ms, CLIDMUModel step "
        f"{result['clidmu_step_ms']:.1f} ms, ratio {result['ratio']:.2f}x\n"
        f"CPU:  plain Keras step {result['plain_step_cpu_ms']:.1f} ms, CLIDMUModel step "
        f"{result['clidmu_step_cpu_ms']:.1f} ms, ratio {result['cpu_ratio']:.2f}x\n"
        f"(median of {args.rounds} rounds of {args.steps} steps, meta_every={args.meta_every}, "
        f"jit_compile={args.jit}, "
        f"load average {result['load_average']:.1f})"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
