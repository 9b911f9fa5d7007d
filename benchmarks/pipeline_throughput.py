"""Input-pipeline throughput next to the CLID-MU training step it feeds.

Measures, on this machine, how many training examples per second:

1. the training stream of `make_training_data` delivers (CIFAR-shaped 32x32x3 uint8 data,
   batch 100, the meta stream zipped in, with each augmentation recipe), iterated on its
   own;
2. the CLID-MU step consumes (`CLIDMUModel` with `small_cnn`, meta objective `clid`, fed
   from batches already in memory, so that input costs nothing).

The stream must be at least 5x faster than the step, so that input never starves training.

Usage:

    python benchmarks/pipeline_throughput.py
    python benchmarks/pipeline_throughput.py --samples 20000 --recipes cifar cifar_strong
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import clidmu_tf  # noqa: E402
from clidmu_tf.pipelines import from_arrays  # noqa: E402
from clidmu_tf.pipelines import make_training_data  # noqa: E402

REQUIRED_RATIO = 5.0


def cifar_shaped_data(num_samples, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_samples, 32, 32, 3), dtype=np.uint8)
    return from_arrays(
        images, rng.integers(0, 10, num_samples), num_classes=10, augmentation="cifar"
    )


def stream_throughput(data, epochs):
    """Training examples per second over `epochs` passes, after one warm-up pass."""
    for _ in data.train:
        pass
    examples, started = 0, time.perf_counter()
    for _ in range(epochs):
        for (x, _), _ in data.train:
            examples += int(x.shape[0])
    return examples / (time.perf_counter() - started)


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.started


def step_throughput(data, steps):
    """Examples per second of CLID-MU training steps fed from memory (second epoch)."""
    batches = list(data.train.take(steps))
    stacked = tf.nest.map_structure(lambda *parts: tf.stack(parts), *batches)
    in_memory = tf.data.Dataset.from_tensor_slices(stacked).repeat()
    model = clidmu_tf.CLIDMUModel(
        clidmu_tf.backbones.small_cnn(data.input_shape, data.num_classes),
        meta_model="wnet",
        meta_objective="clid",
        temperature=0.5,
        meta_every=1,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        meta_optimizer=keras.optimizers.SGD(1e-3),
    )
    timer = _EpochTimer()
    model.fit(
        in_memory, epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False
    )
    return steps * data.batch_size / timer.seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000, help="training samples")
    parser.add_argument("--epochs", type=int, default=3, help="timed passes over the stream")
    parser.add_argument("--steps", type=int, default=20, help="timed CLID-MU steps")
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=["none", "cifar", "cifar_strong"],
        help="augmentation recipes to time (the CIFAR default is 'cifar')",
    )
    args = parser.parse_args()

    dataset = cifar_shaped_data(args.samples)
    streams = {
        recipe: make_training_data(
            dataset, meta_objective="clid", meta_size=1000, batch_size=100, augment=recipe
        )
        for recipe in args.recipes
    }
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"devices {[d.device_type for d in tf.config.list_physical_devices()]}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    print(
        f"Data: {args.samples} CIFAR-shaped uint8 images, batch 100, meta set 1000 in "
        "batches of 100 zipped in"
    )
    stream_rates = {
        recipe: stream_throughput(data, args.epochs) for recipe, data in streams.items()
    }
    step_rate = step_throughput(streams[args.recipes[0]], args.steps)
    print(f"\n{'what':48s} {'examples/s':>12s} {'x step':>8s}")
    print(f"{'CLID-MU step, small_cnn, batch 100 (from memory)':48s} {step_rate:12.0f} {1.0:8.1f}")
    for recipe, rate in stream_rates.items():
        label = f"training stream, augmentation '{recipe}'"
        print(f"{label:48s} {rate:12.0f} {rate / step_rate:8.1f}")
    default = stream_rates.get("cifar", next(iter(stream_rates.values())))
    verdict = "OK" if default >= REQUIRED_RATIO * step_rate else "TOO SLOW"
    print(
        f"\nDefault CIFAR stream / step = {default / step_rate:.1f}x "
        f"(required >= {REQUIRED_RATIO:.0f}x): {verdict}"
    )


if __name__ == "__main__":
    main()
