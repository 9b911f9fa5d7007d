"""The commands on an image folder read it from disk (streamed), end to end, never more
than a batch of images at a time: `train`, and `inspect` reading the run back; `evaluate`,
which gives what it gives on the folder loaded into memory; `export`, which decodes only the
images it verifies on; `tune`. A streamed CIFAR-N keeps its clean labels to score the human
ones."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from clidmu_tf.cli import cli_utils, data_sources, training_job
from clidmu_tf.cli.main import main
from clidmu_tf.cli.run_directory import RunDirectory
from clidmu_tf.pipelines import StreamedDataset, streamed_dataset
from clidmu_tf.cli.run_report import RunReport
from clidmu_tf.pipelines import load_dataset
from clidmu_tf.tuning import clidmu_hyper_model
from tests.test_cli import run_cli
# The small tfds cifar10 and cifar10_n built there, as a fixture.
from tests.test_pipelines_datasets import tfds_dir  # noqa: F401


def write_folder(folder):
    """Three classes of 20 RGB images, 12x12, told apart by one faded channel."""
    rng = np.random.default_rng(0)
    for label in range(3):
        (folder / f"class_{label}").mkdir(parents=True)
        for index in range(20):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            pixels[..., label] //= 3
            Image.fromarray(pixels).save(folder / f"class_{label}" / f"{index:02d}.png")
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder of 60 images: 48 to train, 12 to test."""
    return write_folder(tmp_path_factory.mktemp("streamed") / "shapes")


@pytest.fixture
def decoded(monkeypatch):
    """The sizes of the batches of images decoded from disk, in order; and a whole split
    decoded at once (`pixels()` without indices) fails the test."""
    sizes = []
    read_images, pixels = streamed_dataset.read_images, StreamedDataset.pixels

    def counted_read_images(files, image_shape, *, resize):
        sizes.append(len(files))
        return read_images(files, image_shape, resize=resize)

    def split_refusing_pixels(self, indices=None, *, split="train"):
        assert indices is not None, f"the whole {split} split was decoded at once"
        return pixels(self, indices, split=split)

    monkeypatch.setattr(streamed_dataset, "read_images", counted_read_images)
    monkeypatch.setattr(StreamedDataset, "pixels", split_refusing_pixels)
    return sizes


def test_train_streams_a_folder_and_inspect_reads_it_back(folder, tmp_path, capsys, decoded):
    # A folder streamed under a memory ceiling: every stage (the instance noise, training,
    # the snapshots, the training dynamics, the evaluation, the label-issue ranking, the
    # export's check, inspect) decodes at most a batch of images at a time, never the 48
    # training images whole, so memory does not grow with the folder.
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


@pytest.fixture(scope="module")
def folder_run(folder):
    """A one-epoch run on `folder`, not exported."""
    out = folder.parent / "run"
    status = main([
        "train", "--out", str(out), "--dataset", str(folder), "--image-size", "8x8",
        "--backbone", "mlp", "--epochs", "1", "--batch-size", "16", "--top-k", "1",
        "--baseline", "none", "--export-formats", "none", "--verbose", "0",
    ])  # fmt: skip
    assert status == 0
    return out


def test_export_and_evaluate_decode_a_batch_at_a_time_and_agree_with_memory(
    folder, folder_run, tmp_path, capsys, monkeypatch, decoded
):
    run = folder_run
    # Export decodes the images it verifies on, and no other.
    monkeypatch.setattr(training_job, "VERIFICATION_SAMPLES", 5)
    status, _, err = run_cli(capsys, "export", str(run), "--out", str(tmp_path / "export"))
    assert status == 0, err
    assert decoded == [5]
    # Evaluate scores the 12 test images in batches of 5, with each kind of model.
    # A run reads its own dataset; an export is pointed at the folder.
    folder_data = ["--dataset", str(folder), "--image-size", "8x8"]
    models = [
        [str(run)],
        [str(tmp_path / "export"), *folder_data],
        [str(tmp_path / "export" / "saved_model"), *folder_data],
    ]
    streamed = []
    for model in models:
        decoded.clear()
        status, out, err = run_cli(capsys, "evaluate", *model, "--batch-size", "5")
        assert status == 0, err
        assert sorted(decoded) == [2, 5, 5], model  # read in parallel, in any order
        streamed.append(json.loads(out))
    assert streamed[0]["num_samples"] == 12
    assert streamed[1]["accuracy"] == pytest.approx(streamed[0]["accuracy"])
    # The same folder loaded into memory gives the same results, to the last digit.
    load = data_sources.load_source_dataset
    monkeypatch.setattr(
        data_sources,
        "load_source_dataset",
        lambda *args, **kwargs: load(*args, **kwargs, stream=False),
    )
    for model, expected in zip(models, streamed):
        status, out, err = run_cli(capsys, "evaluate", *model, "--batch-size", "5")
        assert status == 0, err
        assert json.loads(out) == expected


@pytest.mark.parametrize("labeled_fraction", [None, "0.5"])
def test_tune_streams_the_training_split(folder, tmp_path, capsys, monkeypatch, decoded,
                                         labeled_fraction):
    semi = labeled_fraction is not None
    if semi:
        # The largest meta set a trial can draw, 6 in this search space, bounds the
        # unlabelled samples decoded.
        monkeypatch.setattr(clidmu_hyper_model, "META_SIZES", (4, 6))
        monkeypatch.setattr(clidmu_hyper_model, "DEFAULT_META_SIZE", 6)
    out = tmp_path / "search"
    status, _, err = run_cli(
        capsys, "tune", "--out", str(out), "--dataset", str(folder), "--image-size", "8x8",
        "--backbone", "mlp", "--max-trials", "1", "--epochs", "1", "--batch-size", "4",
        "--noise", "symmetric:0.4", "--verbose", "0",
        *(["--labeled-fraction", labeled_fraction] if semi else []),
    )  # fmt: skip
    assert status == 0, err
    with open(out / "summary.json") as handle:
        (trial,) = json.load(handle)["trials"]
    assert trial["status"] == "COMPLETED"
    assert trial["hyperparameters"]["batch_size"] == 4
    # 48 training images: 10 held out for validation, decoded once; 38 trained on in
    # batches of 4 (with --labeled-fraction 0.5, 19 of them, and 6 of the 19 others decoded
    # for the meta set).
    assert sorted(size for size in decoded if size > 4) == ([6, 10] if semi else [10])
    assert sum(size for size in decoded if size <= 4) >= (19 if semi else 38)
    if semi:
        assert trial["hyperparameters"]["meta_size"] == 6


def test_a_damaged_image_met_while_streaming_fails_in_one_line_naming_it(tmp_path, capsys):
    # The header scan at load time passes a truncated PNG; symmetric noise reads no pixels,
    # so the damage shows only when tf.data decodes it, inside fit: the error must still be
    # one line naming the file, not a TensorFlow traceback.
    data = write_folder(tmp_path / "photos")
    damaged = data / "class_1" / "04.png"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    status, _, err = run_cli(
        capsys, "train", "--out", str(tmp_path / "run"), "--dataset", str(data),
        "--noise", "symmetric:0.4", "--backbone", "mlp", "--epochs", "1", "--baseline",
        "none", "--export-formats", "none", "--verbose", "0",
    )  # fmt: skip
    assert status == cli_utils.EXIT_FAILED
    assert "Could not read the image" in err and "04.png" in err, err
    assert "Traceback" not in err and "PyFunc" not in err, err


def test_inspect_names_each_image_file_and_a_changed_folder_is_refused(tmp_path, capsys):
    # A folder user needs the file to fix a label; and a folder that gained or lost images
    # since training would pair the run's labels and splits with other images.
    data = write_folder(tmp_path / "shapes")
    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "train", "--out", str(out), "--dataset", str(data), "--noise", "symmetric:0.4",
        "--backbone", "mlp", "--epochs", "1", "--baseline", "none", "--export-formats",
        "none", "--verbose", "0",
    )  # fmt: skip
    assert status == 0, err
    status, csv_text, err = run_cli(capsys, "inspect", str(out), "--all")
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    labels = RunDirectory(out).training_labels()
    for row in rows:
        # The file is the sample's: its class folder is the sample's true class.
        position = list(labels["indices"]).index(int(row["index"]))
        assert (data / row["file"]).is_file()
        assert row["file"].split("/")[0] == f"class_{labels['true'][position]}"
    (data / "class_0" / "00.png").unlink()
    for command in (["inspect", str(out)], ["evaluate", str(out)]):
        status, _, err = run_cli(capsys, *command)
        assert status == cli_utils.EXIT_FAILED and "changed since the run" in err, err
