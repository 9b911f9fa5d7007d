"""Time and peak memory of CLIDMUModel fit steps over a plain Keras fit step, in one run.

All models use the same `small_cnn` backbone on 32x32x3 inputs, batch 100, meta batch 100,
CLID objective, Meta-Weight-Net. The variants:

- `plain`: a plain Keras model (cross-entropy), the reference;
- `full`: the paper's virtual step (`virtual_step="full"`), a meta update every step;
- `full, meta_every=N`: the same with a meta update every N steps (`--meta-every`, 5);
- `head`: the virtual step on the logits layer only (`virtual_step="head"`);
- `head, meta_every=N`.

Time: steps are timed after a warm-up, alternating between the variants in rounds so that
machine noise hits all alike; each figure is the median over the rounds, and ratios are to
the plain step. Use a number of steps per round that is a multiple of N, so that each round
holds the same share of meta steps (the script warns otherwise). The warm-up takes at least 2
steps, so that the `meta_every` variants have traced their step with and their step without
the meta update before the timing.

Peak memory: each variant runs again in a fresh subprocess (so no variant inherits another's
peak). On a GPU, the peak of `tf.config.experimental.get_memory_info` over the steps
(after the warm-up, which holds the tracing); on CPU (Linux), the process's peak resident set
over all its steps (`VmHWM` of /proc/self/status, reset through /proc/self/clear_refs) less
its resident set before the first, with the model built and the data in memory. The CPU
allocators keep freed memory, so on CPU the figure includes what tracing the steps takes.

    python benchmarks/step_cost.py --rounds 9 --steps 10
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from clidmu_tf import CLIDMUModel, backbones  # noqa: E402
from clidmu_tf.cli.cli_utils import integer_at_least, positive_int  # noqa: E402

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def variants(meta_every):
    """Name -> CLIDMUModel arguments (None for the plain Keras model)."""
    return {
        "plain": None,
        "full": {"virtual_step": "full", "meta_every": 1},
        f"full, meta_every={meta_every}": {"virtual_step": "full", "meta_every": meta_every},
        "head": {"virtual_step": "head", "meta_every": 1},
        f"head, meta_every={meta_every}": {"virtual_step": "head", "meta_every": meta_every},
    }


def make_model(arguments, jit, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = backbones.small_cnn(INPUT_SHAPE, NUM_CLASSES)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    if arguments is None:
        model = keras.Model(backbone.input, backbone.output["logits"])
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        return model
    model = CLIDMUModel(backbone, seed=seed, **arguments)
    model.compile(optimizer=optimizer, jit_compile=jit)
    return model


def make_streams(batch):
    """Cached, repeated in-memory batches: the benchmark times the step, not the input."""
    rng = np.random.default_rng(0)
    x = rng.random((batch * 4, *INPUT_SHAPE), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, len(x)).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat()
    meta = tf.data.Dataset.from_tensor_slices(x).batch(batch).cache().repeat()
    return train, tf.data.Dataset.zip((train, meta)).prefetch(2)


def time_fit(model, dataset, steps):
    """Wall-clock and process CPU seconds per step."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def peak_memory_mib(arguments, args):
    """Peak memory of one variant's steps, in MiB (run in a fresh process)."""
    train, zipped = make_streams(args.batch)
    model = make_model(arguments, args.jit)
    dataset = train if arguments is None else zipped
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        time_fit(model, dataset, args.warmup)
        tf.config.experimental.reset_memory_stats(gpus[0].name)
        time_fit(model, dataset, args.steps)
        return tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2**20
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # resets the peak resident set to the current one
    before = resident_set_kib("VmRSS")
    time_fit(model, dataset, args.warmup + args.steps)
    return (resident_set_kib("VmHWM") - before) / 1024


def resident_set_kib(field):
    with open("/proc/self/status", encoding="ascii") as handle:
        return int(re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.M).group(1))


def measure_memory_in_subprocesses(names, args):
    peaks = {}
    for name in names:
        command = [
            sys.executable, os.path.abspath(__file__), "--measure-memory", name,
            "--meta-every", str(args.meta_every), "--batch", str(args.batch),
            "--steps", str(args.steps), "--warmup", str(args.warmup),
        ] + (["--jit"] if args.jit else [])  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        peaks[name] = json.loads(result.stdout.strip().splitlines()[-1])["peak_memory_mib"]
    return peaks


def parse_args(argv=None):
    """The command line, checked before any model is built."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--steps", type=positive_int, default=10, help="steps per round")
    parser.add_argument(
        "--warmup", type=integer_at_least(2, "the meta_every variants trace a step with and one "
        "without the meta update"), default=6, help="steps before timing (at least 2)",
    )  # fmt: skip
    parser.add_argument("--meta-every", type=positive_int, default=5)
    parser.add_argument(
        "--batch", type=integer_at_least(2, "CLID compares the samples of a meta batch"), default=100,
        help="batch and meta batch size",
    )  # fmt: skip
    parser.add_argument("--jit", action="store_true", help="XLA-compile every step")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--measure-memory", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_memory is not None and args.measure_memory not in variants(args.meta_every):
        parser.error(
            f"argument --measure-memory: expected one of {list(variants(args.meta_every))}. "
            f"Received: {args.measure_memory!r}"
        )
    if args.json is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        # Found out before the runs, not after them.
        parser.error(f"argument --json: its folder does not exist. Received: {args.json!r}")
    if args.steps % args.meta_every:
        print(
            f"Warning: --steps {args.steps} is not a multiple of --meta-every "
            f"{args.meta_every}: the rounds hold different shares of meta steps.",
            file=sys.stderr,
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    table = variants(args.meta_every)

    if args.measure_memory:
        print(json.dumps({"peak_memory_mib": peak_memory_mib(table[args.measure_memory], args)}))
        return

    train, zipped = make_streams(args.batch)
    models = {name: make_model(arguments, args.jit) for name, arguments in table.items()}
    datasets = {name: train if table[name] is None else zipped for name in table}
    for name, model in models.items():
        time_fit(model, datasets[name], args.warmup)
    times = {name: [] for name in table}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(time_fit(model, datasets[name], args.steps))
    medians = {name: np.median(values, axis=0) for name, values in times.items()}
    plain_wall, plain_cpu = medians["plain"]
    peaks = {} if args.no_memory else measure_memory_in_subprocesses(list(table), args)

    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    memory_kind = "peak GPU memory" if device == "GPU" else "peak RSS growth"
    print(
        f"{'variant':<22} {'wall ms':>8} {'ratio':>6} {'CPU ms':>8} {'CPU ratio':>9} "
        f"{memory_kind + ' MiB':>22}"
    )
    rows = []
    for name, (wall, cpu) in medians.items():
        row = {
            "variant": name,
            "step_ms": 1000 * float(wall),
            "ratio": float(wall / plain_wall),
            "step_cpu_ms": 1000 * float(cpu),
            "cpu_ratio": float(cpu / plain_cpu),
            "peak_memory_mib": peaks.get(name),
        }
        rows.append(row)
        memory = "-" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f}"
        print(
            f"{name:<22} {row['step_ms']:>8.1f} {row['ratio']:>5.2f}x {row['step_cpu_ms']:>8.1f} "
            f"{row['cpu_ratio']:>8.2f}x {memory:>22}"
        )
    load = os.getloadavg()[0]
    print(
        f"(medians of {args.rounds} rounds of {args.steps} steps, batch {args.batch}, "
        f"jit_compile={args.jit}, {device}, load average {load:.1f})"
    )
    if args.json:
        summary = {
            "rows": rows,
            "device": device,
            "memory": memory_kind,
            "jit_compile": args.jit,
            "batch": args.batch,
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "load_average": load,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
