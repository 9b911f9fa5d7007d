"""Peak memory of `clidmu-tf train` on image folders of two sizes, and the stream's speed.

For each folder size: writes a folder of random RGB images (one sub-folder per class) with
PIL under `--workdir`, runs

    clidmu-tf train --dataset FOLDER --epochs 1 --backbone mlp --baseline none
        --export-formats none --verbose 0 --out RUN

under `/usr/bin/time -v` and reads its peak resident set size; then times the training
stream of `make_training_data(stream_image_folder(FOLDER))` on its own (images decoded per
second) and reads the images per second of the training epoch from the run's report.
A folder streamed from disk should peak at about the same memory whatever its size.

Usage:

    python benchmarks/streamed_folder_memory.py --workdir /tmp/folders
    python benchmarks/streamed_folder_memory.py --workdir /tmp/folders --sizes 1000 6000 --side 128
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

CLASSES = 10


def write_folder(directory, count, side, seed=0):
    """`count` random RGB PNG images of `side` x `side`, spread over `CLASSES` folders."""
    from PIL import Image

    if os.path.isdir(directory) and sum(len(files) for _, _, files in os.walk(directory)) == count:
        return
    shutil.rmtree(directory, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        label = index % CLASSES
        folder = os.path.join(directory, f"class_{label}")
        os.makedirs(folder, exist_ok=True)
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        pixels[..., label % 3] //= 2
        Image.fromarray(pixels).save(os.path.join(folder, f"{index:05d}.png"))


def peak_rss_of_training(directory, run_dir):
    """`(peak RSS in MB, training images per second, report)` of one `train` run."""
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "clidmu_tf", "train", "--dataset", directory,
        "--epochs", "1", "--backbone", "mlp", "--baseline", "none", "--export-formats", "none",
        "--verbose", "0", "--out", run_dir,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    with open(os.path.join(run_dir, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    # One epoch of CLID-MU plus its evaluation on the test split.
    trained = report["data"]["num_train"] / report["timings"]["train_method"]
    return peak_kb / 1024, trained, report


def stream_rate(directory):
    """Training images per second the streamed training stream delivers on its own."""
    from clidmu_tf.pipelines import make_training_data, stream_image_folder

    data = make_training_data(stream_image_folder(directory), batch_size=64)
    images, started = 0, time.perf_counter()
    for (x, _), _ in data.train:
        images += int(x.shape[0])
    return images / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="where the folders and runs go")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 6000])
    parser.add_argument("--side", type=int, default=128)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        folder = os.path.join(args.workdir, f"folder_{size}")
        write_folder(folder, size, args.side)
        peak, trained, report = peak_rss_of_training(folder, os.path.join(args.workdir, f"run_{size}"))
        streamed = stream_rate(folder)
        decoded_mb = size * args.side * args.side * 3 / 1e6
        rows.append((size, decoded_mb, peak, streamed, trained, report["data"]["num_train"]))
        print(f"{size} images: peak RSS {peak:.0f} MB, stream {streamed:.0f} images/s, "
              f"training epoch {trained:.1f} images/s", flush=True)  # fmt: skip
    print("\n| images | decoded uint8 (MB) | peak RSS (MB) | stream (images/s) | training epoch "
          "(images/s) | training samples |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for size, decoded_mb, peak, streamed, trained, num_train in rows:
        print(f"| {size:,} | {decoded_mb:.0f} | {peak:.0f} | {streamed:.0f} | {trained:.1f} | "
              f"{num_train:,} |")  # fmt: skip
    if len(rows) > 1:
        print(f"\nPeak RSS difference: {rows[-1][2] - rows[0][2]:.0f} MB")


if __name__ == "__main__":
    main()
