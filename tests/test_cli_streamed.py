"""`clidmu-tf train` on an image folder reads it from disk (streamed), end to end, never
more than a batch of images at a time, and `inspect` reads the run back; a streamed CIFAR-N
keeps its clean labels to score the human ones."""

import csv
import io

import numpy as np
from PIL import Image

from clidmu_tf.cli.run_directory import RunDirectory
from clidmu_tf.pipelines import streamed_dataset
from clidmu_tf.cli.run_report import RunReport
from clidmu_tf.pipelines import load_dataset
from tests.test_cli import run_cli
# The small tfds cifar10 and cifar10_n built there, as a fixture.
from tests.test_pipelines_datasets import tfds_dir  # noqa: F401


def test_train_streams_a_folder_and_inspect_reads_it_back(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "shapes"
    for label in range(3):
        (folder / f"class_{label}").mkdir(parents=True)
        for index in range(20):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            pixels[..., label] //= 3
            Image.fromarray(pixels).save(folder / f"class_{label}" / f"{index:02d}.png")
    # A folder streamed under a memory ceiling: every stage (the instance noise, training,
    # the snapshots, the training dynamics, the evaluation, the label-issue ranking, the
    # export's check, inspect) decodes at most a batch of images at a time, never the 48
    # training images whole, so memory does not grow with the folder.
    decoded = []

    def read_images(files, image_shape, *, resize):
        decoded.append(len(files))
        return original_read_images(files, image_shape, resize=resize)

    original_read_images = streamed_dataset.read_images
    monkeypatch.setattr(streamed_dataset, "read_images", read_images)
    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "train", "--out", str(out), "--dataset", str(folder), "--image-size", "8x8",
        "--noise", "instance:0.4", "--backbone", "mlp", "--epochs", "2", "--batch-size", "16",
        "--top-k", "1", "--baseline", "none", "--export-formats", "saved_model",
        "--verbose", "0",
    )  # fmt: skip
    assert status == 0, err
    report = RunReport.load(out)
    assert report["status"] == "completed"
    assert report["data"]["streamed"] is True and report["data"]["input_dtype"] == "uint8"
    assert (report["data"]["num_train"], report["data"]["num_test"]) == (48, 12)
    assert report["export"]["verification"]
    assert 0.0 <= report["ensemble_test_accuracy"] <= 1.0
    labels = RunDirectory(out).training_labels()
    assert len(labels["weights"]) == 48
    assert sum(decoded) > 4 * 60 and max(decoded) <= 16, decoded
    decoded.clear()

    status, csv_text, err = run_cli(
        capsys, "inspect", str(out), "--top", "5", "--score", "final_weight"
    )
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == 5
    assert sum(decoded) >= 48 and max(decoded) <= 16, decoded
    # The ranking read back from disk agrees with the one training wrote.
    least_trusted = np.argsort(labels["weights"], kind="stable")[:5]
    np.testing.assert_allclose(
        [float(row["weight"]) for row in rows], labels["weights"][least_trusted], rtol=1e-4
    )


def test_train_streams_cifar_n_and_scores_the_human_labels_with_the_clean_ones(
    tfds_dir, tmp_path, capsys
):
    memory = load_dataset("cifar10_n", data_dir=tfds_dir)
    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "train", "--out", str(out), "--dataset", "cifar10_n", "--data-dir",
        str(tfds_dir), "--noise", "none", "--backbone", "mlp", "--epochs", "1",
        "--batch-size", "16", "--meta-size", "10", "--top-k", "1", "--baseline", "none",
        "--export-formats", "none", "--verbose", "0",
    )  # fmt: skip
    assert status == 0, err
    report = RunReport.load(out)
    assert report["status"] == "completed" and report["data"]["streamed"] is True
    # The run trained on the human labels and kept the original ones beside them ...
    labels = RunDirectory(out).training_labels()
    np.testing.assert_array_equal(labels["given"], memory.y_train[labels["indices"]])
    np.testing.assert_array_equal(labels["true"], memory.y_train_clean[labels["indices"]])
    # ... to report the real noise rate and score the label-issue ranking.
    flipped = labels["given"] != labels["true"]
    assert report["noise"]["kind"] == "observed"
    assert report["label_issues"]["num_flipped"] == np.sum(flipped) > 0
    assert 0.0 <= report["label_issues"]["roc_auc"] <= 1.0
    status, csv_text, err = run_cli(capsys, "inspect", str(out), "--all")
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == len(labels["indices"])
    assert sum(row["label_is_wrong"] == "True" for row in rows) == np.sum(flipped)
