"""Inference latency of the exported ensemble in ONNX Runtime against Keras in TensorFlow, CPU.

The ensemble is the product's: a CLIDSnapshotEnsemble directory (by default five members of
`small_cnn` on 32x32x3 inputs, 10 classes, each randomly initialised: inference cost does not
depend on the weights' values) rebuilt with `load_snapshot_ensemble` and exported with
`export_ensemble`. Three runtimes predict the same batches:

- `onnxruntime`: `OnnxPredictor.predict` on the exported `model.onnx` (no TensorFlow involved);
- `keras`: the Keras ensemble's `predict_on_batch` (its compiled predict function);
- `saved_model`: the exported SavedModel's `serve` endpoint, reloaded with
  `tf.saved_model.load` (a TensorFlow graph, as TF Serving runs it).

Calls are timed one by one after a warm-up, the runtimes alternating in rounds so that
machine noise hits all alike. Reported: median latency per call, throughput (samples per
second at that median) and each runtime's latency over onnxruntime's.

    python benchmarks/inference.py --rounds 10 --calls-batch-1 10 --calls-batch-256 1

The load average is printed before and after: other processes on the machine inflate and
scatter the figures, the ratios less than the absolute times.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from clidmu_tf import backbones  # noqa: E402
from clidmu_tf.callbacks import (  # noqa: E402
    CLIDSnapshotEnsemble,
    load_snapshot_ensemble,
    read_snapshot_manifest,
)
from clidmu_tf.export import OnnxPredictor, export_ensemble  # noqa: E402

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
BATCH_SIZES = (1, 256)


def random_snapshots(directory, members, seed):
    """A snapshot directory of `members` randomly initialised `small_cnn`s, written by the
    product's callback so that the manifest and files are exactly what training leaves."""
    keras.utils.set_random_seed(seed)
    backbone = backbones.small_cnn(INPUT_SHAPE, NUM_CLASSES)
    meta = np.random.default_rng(seed).random((100,) + INPUT_SHAPE, dtype=np.float32)
    callback = CLIDSnapshotEnsemble(meta, top_k=members, directory=directory)
    callback.set_model(backbone)
    callback.on_train_begin()
    for epoch in range(members):
        fresh = backbones.small_cnn(INPUT_SHAPE, NUM_CLASSES)
        backbone.set_weights(fresh.get_weights())
        callback.on_epoch_end(epoch, {})


def runtimes(ensemble, export_dir):
    predictor = OnnxPredictor(export_dir)
    reloaded = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    return {
        "onnxruntime": lambda x: predictor.predict(x)["logits"],
        "keras": lambda x: np.asarray(ensemble.predict_on_batch(x)),
        "saved_model": lambda x: reloaded.serve(x)["logits"].numpy(),
    }


def measure(runs, batches, rounds, calls, warmup):
    timings = {(name, size): [] for name in runs for size in batches}
    for name in runs:
        for size, batch in batches.items():
            for _ in range(warmup):
                runs[name](batch)
    for _ in range(rounds):
        for size, batch in batches.items():
            for name, run in runs.items():
                for _ in range(calls[size]):
                    start = time.perf_counter()
                    run(batch)
                    timings[(name, size)].append(time.perf_counter() - start)
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", help="a CLIDSnapshotEnsemble directory to benchmark")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls-batch-1", type=int, default=10)
    parser.add_argument("--calls-batch-256", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        snapshots = args.snapshots
        if snapshots is None:
            snapshots = os.path.join(workdir, "snapshots")
            random_snapshots(snapshots, args.members, args.seed)
        ensemble = load_snapshot_ensemble(snapshots)
        export_dir = os.path.join(workdir, "export")
        members = read_snapshot_manifest(snapshots)["snapshots"]
        card = export_ensemble(ensemble, export_dir, members=members)
        sample_shape = tuple(card["input"]["shape"][1:])
        rng = np.random.default_rng(args.seed)
        batches = {
            size: rng.standard_normal((size,) + sample_shape).astype("float32")
            for size in BATCH_SIZES
        }
        runs = runtimes(ensemble, export_dir)
        for size, batch in batches.items():
            reference = runs["keras"](batch)
            for name, run in runs.items():
                if name == "keras":
                    continue
                difference = float(np.max(np.abs(run(batch) - reference)))
                print(f"max |{name} - keras| logits at batch {size}: {difference:.2e}")
        calls = {1: args.calls_batch_1, 256: args.calls_batch_256}
        load_before = os.getloadavg()[0]
        timings = measure(runs, batches, args.rounds, calls, args.warmup)
        load_after = os.getloadavg()[0]

    figures = []
    for size in BATCH_SIZES:
        onnx_median = statistics.median(timings[("onnxruntime", size)])
        for name in runs:
            median = statistics.median(timings[(name, size)])
            figures.append(
                {
                    "runtime": name,
                    "batch_size": size,
                    "calls": len(timings[(name, size)]),
                    "median_ms": 1000 * median,
                    "samples_per_s": size / median,
                    "latency_over_onnxruntime": median / onnx_median,
                }
            )
    environment = {
        "cpus": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "members": len(card["ensemble"]["members"]),
        "input_shape": list(card["input"]["shape"]),
        "versions": card["versions"],
    }
    print(json.dumps(environment))
    print("| runtime | batch | median latency (ms) | throughput (samples/s) | latency / onnxruntime |")
    print("|---|---|---|---|---|")
    for row in figures:
        print(
            f"| {row['runtime']} | {row['batch_size']} | {row['median_ms']:.2f} | "
            f"{row['samples_per_s']:.0f} | {row['latency_over_onnxruntime']:.2f}x |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"environment": environment, "figures": figures}, handle, indent=2)


if __name__ == "__main__":
    main()
