"""`--labeled-fraction` and `--unlabeled-dir` of `clidmu-tf train` and `tune`."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from clidmu_tf.cli import cli_utils
from clidmu_tf.cli.run_directory import RunDirectory
from clidmu_tf.cli.run_report import RunReport
from tests.test_cli import run_cli

CLASSES = ("circle", "square", "triangle")
PER_CLASS = 24
UNLABELED = 30
QUICK = [
    "--backbone", "mlp", "--epochs", "1", "--batch-size", "16", "--baseline", "none",
    "--export-formats", "none", "--top-k", "1", "--verbose", "0", "--noise", "symmetric:0.4",
]  # fmt: skip


def write_images(folder, count, size, seed, offset=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        pixels[..., seed % 3] = 40 * (seed % 3) + offset
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("semi")
    for label, name in enumerate(CLASSES):
        write_images(root / "labelled" / name, PER_CLASS, 8, seed=label)
    # Another size, and a nested folder: both are read, resized to 8x8.
    write_images(root / "unlabelled", UNLABELED - 10, 10, seed=7)
    write_images(root / "unlabelled" / "more", 10, 10, seed=8)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    return root


def test_train_on_a_labelled_fraction_with_an_unlabelled_folder(folders, tmp_path, capsys):
    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "train", "--out", str(out), "--dataset", str(folders / "labelled"),
        "--labeled-fraction", "0.5", "--unlabeled-dir", str(folders / "unlabelled"), *QUICK,
        "--snapshot-selection", "held-out",
    )  # fmt: skip
    assert status == 0, err
    report = RunReport.load(out)
    assert report["status"] == "completed"
    data = report["data"]
    # 72 images, 14 held out for the test, 58 for training, of which half keep their labels.
    assert (data["num_test"], data["num_train"]) == (14, 29)
    assert (data["labeled_fraction"], data["unlabeled_images"]) == (0.5, UNLABELED)
    # The default meta set, a fifth of the training pool, drawn from the unlabelled samples.
    assert data["num_meta"] == 58 // 5
    # The held-out selection set (a tenth of 58) is drawn from them too, costing no label:
    # the labelled half is still all trained on.
    assert data["num_selection"] == 5 and data["selection_from_unlabeled"]
    assert report["ensemble"]["members"] and "held_out_clid" in report["method"]["epochs"][0]
    # Only the labelled half is trained on and ranked.
    labels = np.load(out / RunDirectory.TRAINING_LABELS)
    assert len(labels["indices"]) == 29 and not labels["held_out"].any()
    counts = np.bincount(labels["true"], minlength=3)
    assert counts.min() >= 9 and counts.max() <= 10  # stratified


def test_tune_draws_the_meta_set_from_the_unlabelled_samples(folders, tmp_path, capsys):
    out = tmp_path / "search"
    status, _, err = run_cli(
        capsys, "tune", "--out", str(out), "--dataset", str(folders / "labelled"),
        "--labeled-fraction", "0.5", "--unlabeled-dir", str(folders / "unlabelled"),
        "--max-trials", "1", "--epochs", "1", "--verbose", "0", "--noise", "symmetric:0.4",
    )  # fmt: skip
    assert status == 0, err
    with open(out / "summary.json") as handle:
        (trial,) = json.load(handle)["trials"]
    # 58 training images, 12 held out for validation, 23 of the other 46 unlabelled, plus
    # the 30 images of the folder: the largest meta set is all 53 of them.
    assert trial["status"] == "COMPLETED"
    assert trial["hyperparameters"]["meta_size"] == 23 + UNLABELED


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--labeled-fraction", "0"], "--labeled-fraction: expected a number in (0, 1]"),
        (["--labeled-fraction", "1.5"], "Received: '1.5'"),
        (["--labeled-fraction", "nan"], "Received: 'nan'"),
        (["--labeled-fraction", "inf"], "Received: 'inf'"),
        (["--labeled-fraction", "half"], "Received: 'half'"),
        (["--unlabeled-dir", "{root}/missing"], "`--unlabeled-dir`, expected an existing folder"),
        (["--unlabeled-dir", "{root}/empty"], "which holds none"),
        (
            ["--labeled-fraction", "0.5", "--method", "wnet-clean-meta"],
            "Received: --method=wnet-clean-meta",
        ),
        # The labelled folder's test images would join the meta set.
        (
            ["--dataset", "{root}/labelled", "--unlabeled-dir", "{root}/labelled"],
            "must not hold or lie inside the --dataset folder",
        ),
        (
            ["--dataset", "{root}/labelled", "--unlabeled-dir", "{root}/labelled/circle"],
            "must not hold or lie inside the --dataset folder",
        ),
    ],
)
@pytest.mark.parametrize("command", ["train", "tune"])
def test_bad_semi_supervised_values_are_refused_before_loading(
    folders, tmp_path, capsys, command, extra, expected
):
    if command == "tune" and "wnet-clean-meta" in extra:
        extra = [*extra[:2], "--method", "wnet-noisy-meta"]
        expected = "Received: --method=wnet-noisy-meta"
    out = tmp_path / "run"
    argv = [item.replace("{root}", str(folders)) for item in extra]
    status, _, err = run_cli(capsys, command, "--out", str(out), *argv)
    assert status == cli_utils.EXIT_USAGE
    assert expected in " ".join(err.split())
    assert not out.exists()


def test_an_unlabelled_folder_needs_an_image_dataset(folders, tmp_path, capsys):
    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "train", "--out", str(out), "--unlabeled-dir", str(folders / "unlabelled"),
        "--limit-train", "100", *QUICK,
    )  # fmt: skip
    assert status == cli_utils.EXIT_FAILED
    assert "--unlabeled-dir adds images" in err and "--dataset='digits'" in err


@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_fraction_that_leaves_a_class_unlabelled_is_refused_before_training(
    command, folders, tmp_path, capsys
):
    # The labelled folder's 72 images keep 57 to train; 0.04 keeps 2 labels, so one of the
    # three classes has none (train failed inside fit in cleanlab and left a run behind;
    # tune's trials all failed and it still exited 0).
    out = tmp_path / "out"
    extra = QUICK if command == "train" else ["--max-trials", "1", "--epochs", "1",
                                              "--backbone", "mlp", "--verbose", "0"]
    status, _, err = run_cli(
        capsys, command, "--out", str(out), "--dataset", str(folders / "labelled"),
        "--labeled-fraction", "0.04", *extra,
    )  # fmt: skip
    assert status == cli_utils.EXIT_FAILED, err
    assert "--labeled-fraction=0.04" in err and "without a labelled sample" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_labeled_split_keeps_a_stratified_fraction_and_every_class():
    from clidmu_tf.pipelines.splits import labeled_split

    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    labeled, unlabeled = labeled_split(labels, 0.1, seed=0)
    assert np.bincount(labels[labeled]).tolist() == [4, 3, 2, 1]
    assert sorted(np.concatenate([labeled, unlabeled]).tolist()) == list(range(100))
    with pytest.raises(ValueError, match=r"leaves 1 of the 4 classes.*labeled_fraction=0.03"):
        labeled_split(labels, 0.03, seed=0)


def test_hidden_entries_of_a_folder_are_neither_classes_nor_images(folders, tmp_path):
    # Jupyter's checkpoints folder was read as an empty class (refused), macOS's resource
    # forks `._NAME.png` as unreadable images (refused).
    from clidmu_tf.pipelines import load_image_folder, load_unlabeled_images

    data = tmp_path / "labelled"
    shutil.copytree(folders / "labelled", data)
    (data / ".ipynb_checkpoints").mkdir()
    (data / "circle" / "._000.png").write_bytes(b"\x00\x05\x16\x07 not an image")
    (data / ".cache").mkdir()
    shutil.copy(data / "circle" / "000.png", data / ".cache" / "stray.png")
    dataset = load_image_folder(str(data), seed=0)
    assert tuple(dataset.class_names) == CLASSES
    assert len(dataset.y_train) + len(dataset.y_test) == PER_CLASS * len(CLASSES)
    pixels = load_unlabeled_images(str(data), image_size=(8, 8), channels=3)
    assert len(pixels) == PER_CLASS * len(CLASSES)
