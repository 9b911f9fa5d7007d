"""Tests of the `clidmu-tf` command line: argument errors, a tiny end-to-end run and the
sub-commands that read it back."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clidmu_tf.callbacks import load_dynamics, read_snapshot_manifest
from clidmu_tf.cli import cli_utils, training_job
from clidmu_tf.cli.epoch_recorder import EpochRecorder
from clidmu_tf.cli.main import main
from clidmu_tf.cli.run_directory import RunDirectory
from clidmu_tf.cli.run_report import RunReport
from clidmu_tf.cli.train import comparison_table
from clidmu_tf.label_issue_ranking import DEFAULT_SCORE, SCORES, suggested_num_issues

TINY = [
    "--limit-train", "200",
    "--backbone", "mlp",
    "--epochs", "2",
    "--batch-size", "50",
    "--top-k", "2",
    "--verbose", "0",
]  # fmt: skip
PLOTS = (
    "clid_and_test_accuracy.png",
    "meta_weight_function.png",
    "sample_weight_histograms.png",
    "noise_transition_matrix.png",
    "label_issues.png",
)


def run_cli(capsys, *argv):
    """Runs `main(argv)`; returns `(exit status, stdout, stderr)`."""
    try:
        status = main(list(argv))
    except SystemExit as exit:
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished two-epoch run on 200 digits: CLID-MU, the baseline, export and plots."""
    out = str(tmp_path_factory.mktemp("cli") / "run")
    assert main(["train", "--out", out, *TINY]) == 0
    return out


# Argument errors: all refused before any data is loaded, and nothing is written.


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--out", "{out}", "--epoch", "3"], ["--epochs", "Valid options:", "--noise"]),
        (["train", "--out", "{out}", "--method", "mwnet"], ["clid-wnet", "wnet-clean-meta"]),
        (["train", "--out", "{out}", "--backbone", "vgg"], ["small_cnn", "resnet32"]),
        (["train", "--out", "{out}", "--distribute", "tpu"], ["mirrored", "multiworker"]),
        (["train", "--out", "{out}", "--noise", "uniform:0.4"], ["symmetric", "instance", "pair"]),
        (["train", "--out", "{out}", "--noise", "symmetric:1.5"], ["[0, 1]", "symmetric:1.5"]),
        (["train", "--out", "{out}", "--noise", "symmetric"], ["KIND:RATE"]),
        (["train", "--out", "{out}", "--epochs", "0"], ["--epochs", "positive integer"]),
        (["train", "--out", "{out}", "--temperature", "-1"], ["--temperature", "positive"]),
        (["train", "--out", "{out}", "--dataset", "imagenet"], ["digits", "mnist_5k", "tfds:"]),
        (["train", "--out", "{out}", "--data-dir", "{out}/missing"], ["--data-dir"]),
        (["train", "--out", "{out}", "--export-formats", "tflite"], ["saved_model", "onnx"]),
        (["train", "--out", "{out}", "--virtual-step", "last"], ["full", "head"]),
        (["train"], ["--out"]),
        (["frobnicate"], ["train", "inspect", "predict"]),
    ],
)
def test_bad_arguments_are_refused_with_the_valid_choices(tmp_path, capsys, argv, expected):
    out = tmp_path / "run"
    argv = [arg.format(out=out) for arg in argv]
    status, _, err = run_cli(capsys, *argv)
    assert status == cli_utils.EXIT_USAGE
    for text in expected:
        assert text in err
    assert not out.exists()


def test_train_help_names_every_dataset_of_the_registry(capsys):
    from clidmu_tf.pipelines import list_datasets

    status, out, _ = run_cli(capsys, "train", "--help")
    assert status == 0
    help_text = " ".join(out.split())
    for name in list_datasets():
        assert name in help_text, name


def test_train_help_states_the_library_default_meta_learning_rates(capsys):
    import re

    from clidmu_tf.models.clidmu_model import DEFAULT_META_LEARNING_RATES

    status, out, _ = run_cli(capsys, "train", "--help")
    assert status == 0
    # Without whitespace: argparse may wrap the text inside "Meta-Weight-Net".
    help_text = "".join(out.split())
    for rate, optimizer, meta_model in (("wnet", "Adam", "Meta-Weight-Net"), ("vri", "Adam", "VRI")):
        match = re.search(rf"[,(]([0-9.e+-]+?)with{optimizer}for{meta_model}", help_text)
        assert match and float(match.group(1)) == DEFAULT_META_LEARNING_RATES[rate]


def test_multiworker_without_tf_config_says_what_is_needed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    status, _, err = run_cli(
        capsys, "train", "--out", str(tmp_path / "run"), "--distribute", "multiworker"
    )
    assert status == cli_utils.EXIT_USAGE
    assert "TF_CONFIG" in err


def test_a_non_empty_out_is_refused_without_overwrite(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    status, _, err = run_cli(capsys, "train", "--out", str(tmp_path), *TINY)
    assert status == cli_utils.EXIT_USAGE
    assert "--overwrite" in err
    # Not a run directory: even --overwrite does not delete it.
    status, _, err = run_cli(capsys, "train", "--out", str(tmp_path), "--overwrite", *TINY)
    assert status == cli_utils.EXIT_USAGE
    assert "holds no clidmu-tf run" in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_overwrite_moves_only_an_earlier_runs_files_aside(tmp_path):
    (tmp_path / RunReport.FINAL_NAME).write_text("{}")
    (tmp_path / RunDirectory.MODEL).write_text("")
    (tmp_path / "notes.txt").write_text("keep me")
    run = RunDirectory(tmp_path)
    with pytest.raises(ValueError, match="--overwrite"):
        run.check_writable(overwrite=False)
    run.check_writable(overwrite=True)
    run.replace_aside()
    assert sorted(os.listdir(tmp_path)) == [RunDirectory.REPLACED, "notes.txt"]
    run.restore_replaced()
    assert sorted(os.listdir(tmp_path)) == [RunDirectory.MODEL, "notes.txt", RunReport.FINAL_NAME]


def test_python_dash_m_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "clidmu_tf", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "--noise KIND:RATE" in result.stdout
    assert "TF_CONFIG" in result.stdout


def test_parse_noise():
    assert training_job.parse_noise("none") == (None, None)
    assert training_job.parse_noise("pair:0.2") == ("pair", 0.2)
    with pytest.raises(ValueError, match="random_flip"):
        training_job.parse_noise("flip:0.2")


# The end-to-end run and what reads it back.


def test_train_writes_a_complete_report(tiny_run):
    report = RunReport.load(tiny_run)
    assert report["status"] == "completed"
    assert not os.path.exists(os.path.join(tiny_run, RunReport.PARTIAL_NAME))
    for key in (
        "config", "versions", "noise", "method", "baseline", "timings", "test_accuracy",
        "ensemble_test_accuracy", "baseline_test_accuracy", "label_issues", "export",
    ):  # fmt: skip
        assert key in report, key
    assert report["config"]["noise"] == "instance:0.4"
    assert report["versions"]["keras"].startswith("3.")
    assert report["data"]["num_selection"] == 0
    assert report["noise"]["num_samples"] == 200 and report["noise"]["num_flipped"] > 0
    epochs = report["method"]["epochs"]
    assert [entry["epoch"] for entry in epochs] == [1, 2]
    for name in ("loss", "meta_clid", "clid", "test_accuracy", "test_loss"):
        assert np.isfinite(epochs[-1][name]), name
    assert len(report["baseline"]["epochs"]) == 2
    assert 0.0 <= report["ensemble_test_accuracy"] <= 1.0
    assert len(report["ensemble"]["members"]) == 2
    assert {"train_method", "train_baseline", "export", "total"} <= set(report["timings"])
    assert report["export"]["verification"]["passed"]
    issues = report["label_issues"]
    assert issues["score"] == DEFAULT_SCORE and issues["num_samples"] == 200
    assert 0 <= issues["suggested_num_issues"] <= 200
    assert issues["num_flipped"] == report["noise"]["num_flipped"]
    # The paper's rule: the snapshots are ranked by the meta set's CLID, logged each epoch.
    assert read_snapshot_manifest(RunDirectory(tiny_run).snapshots)["monitor"] == "meta_clid"
    curve = issues["roc_curve"]
    assert curve["false_positive_rate"][0] == 0.0 and curve["true_positive_rate"][-1] == 1.0
    assert np.trapezoid(curve["true_positive_rate"], curve["false_positive_rate"]) == (
        pytest.approx(issues["roc_auc"], abs=1e-3)
    )
    assert set(issues["every_score"]) == set(SCORES)
    assert issues["every_score"][DEFAULT_SCORE]["roc_auc"] == issues["roc_auc"]


def test_auto_augmentation_is_the_datasets_recipe_but_not_for_an_mlp(tiny_run):
    assert training_job.resolve_augmentation("auto", "small_cnn") == "auto"
    assert training_job.resolve_augmentation("auto", "mlp") is None
    assert training_job.resolve_augmentation("shift", "mlp") == "shift"
    assert training_job.resolve_augmentation("none", "small_cnn") is None
    # The tiny run trains an MLP on digits, whose recipe is 1-pixel shifts: none was used.
    assert RunReport.load(tiny_run)["data"]["augmentation"]["crop_padding"] == 0


def test_train_writes_plots_snapshots_logs_and_export(tiny_run):
    run = RunDirectory(tiny_run)
    for name in PLOTS:
        with open(os.path.join(run.plots, name), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", name
    assert os.path.isfile(os.path.join(run.snapshots, "clid_snapshots.json"))
    assert os.listdir(run.logs("method")) and os.listdir(run.logs("baseline"))
    for name in ("model.onnx", "model_card.json", "saved_model"):
        assert os.path.exists(os.path.join(run.export, name)), name
    for name in (RunDirectory.MODEL, RunDirectory.BASELINE_MODEL, RunDirectory.LABEL_ERRORS):
        assert os.path.isfile(run.join(name)), name


def test_train_prints_the_comparison_table(tiny_run, capsys):
    print(comparison_table(RunReport.load(tiny_run), tiny_run))
    table = capsys.readouterr().out
    assert "cross-entropy baseline (epoch 2, last)" in table
    assert "clid-wnet (epoch 2, last)" in table
    assert "CLID snapshot ensemble (top 2)" in table
    assert "ROC AUC" in table
    every_score = table.split("ROC AUC of each inspect --score: ")[1]
    assert all(f"{name} 0." in every_score or f"{name} 1." in every_score for name in SCORES)


def test_inspect_ranks_the_likely_wrong_labels_as_csv(tiny_run, capsys, tmp_path):
    status, out, err = run_cli(capsys, "inspect", tiny_run, "--top", "7")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 7
    assert list(rows[0]) == [
        "rank", "index", "weight", "given_label", "predicted_label", "confidence",
        "label_quality", "given_name", "predicted_name", "true_label", "label_is_wrong",
        "held_out",
    ]  # fmt: skip
    # The run held nothing out (the paper's snapshot selection).
    assert {row["held_out"] for row in rows} == {"0"}
    qualities = [float(row["label_quality"]) for row in rows]
    assert qualities == sorted(qualities)
    assert [int(row["rank"]) for row in rows] == list(range(1, 8))
    labels = RunDirectory(tiny_run).training_labels()
    first = rows[0]
    position = list(labels["indices"]).index(int(first["index"]))
    assert int(first["given_label"]) == labels["given"][position]
    assert int(first["true_label"]) == labels["true"][position]
    assert float(first["weight"]) == pytest.approx(labels["weights"][position], rel=1e-4)
    suggested = RunReport.load(tiny_run)["label_issues"]["suggested_num_issues"]
    early = load_dynamics(RunDirectory(tiny_run).join(RunDirectory.TRAINING_DYNAMICS))
    assert suggested == suggested_num_issues(early) == max(early["num_label_issues"])
    assert f"that {suggested} of the 200 training labels are wrong" in err

    output = tmp_path / "all.csv"
    assert main(["inspect", tiny_run, "--all", "--output", str(output)]) == 0
    with open(output, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(labels["indices"])


def test_training_labels_of_an_older_run_mark_its_held_out_samples(tmp_path):
    # Runs written before the marks were kept listed the held-out samples last.
    np.savez(tmp_path / RunDirectory.TRAINING_LABELS, indices=np.arange(5), given=np.zeros(5),
             true=np.zeros(5))  # fmt: skip
    report = {"status": "completed", "config": {}, "data": {"num_selection": 2}}
    (tmp_path / RunReport.FINAL_NAME).write_text(json.dumps(report))
    held_out = RunDirectory(tmp_path).training_labels()["held_out"]
    assert held_out.tolist() == [False, False, False, True, True]


@pytest.mark.parametrize("score", ["final_weight", "ensemble"])
def test_inspect_ranks_by_the_chosen_score_as_the_library_does(tiny_run, capsys, score):
    from clidmu_tf import label_issues

    status, out, _ = run_cli(capsys, "inspect", tiny_run, "--score", score, "--all")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    issues = label_issues(tiny_run, score=score)
    indices = RunDirectory(tiny_run).training_labels()["indices"]
    assert [int(row["index"]) for row in rows] == indices[issues["ranking"]].tolist()
    np.testing.assert_allclose(
        [float(row["label_quality"]) for row in rows],
        issues["quality"][issues["ranking"]],
        rtol=1e-5,
    )
    if score == "final_weight":
        assert [row["weight"] for row in rows] == [row["label_quality"] for row in rows]


def test_inspect_refuses_an_unknown_score(tiny_run, capsys):
    status, _, err = run_cli(capsys, "inspect", tiny_run, "--score", "loss")
    assert status == cli_utils.EXIT_USAGE
    assert "ensemble" in err and "early_loss" in err


def test_predict_on_a_numpy_file(tiny_run, capsys, tmp_path):
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.random.default_rng(0).random((3, 8, 8, 1), dtype=np.float32))
    results = {}
    export = os.path.join(tiny_run, "export")
    models = (
        tiny_run,
        export,
        os.path.join(export, "model.onnx"),
        os.path.join(export, "saved_model"),
    )
    for model in models:
        status, out, _ = run_cli(capsys, "predict", model, str(inputs))
        assert status == 0
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [row["input"] for row in rows] == ["x.npy[0]", "x.npy[1]", "x.npy[2]"]
        assert list(rows[0]) == ["input", "predicted_class", "predicted_name", "confidence"]
        results[model] = [row["predicted_class"] for row in rows]
    # The Keras ensemble and its ONNX export agree.
    assert len({tuple(classes) for classes in results.values()}) == 1


def test_predict_on_an_image_folder(tiny_run, capsys, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("L", (16, 16), color=200).save(folder / "a.png")
    Image.new("RGB", (8, 8), color=(10, 20, 30)).save(folder / "sub" / "b.jpg")
    status, out, _ = run_cli(capsys, "predict", tiny_run, str(folder))
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["input"] for row in rows] == ["a.png", os.path.join("sub", "b.jpg")]


def test_predict_refuses_inputs_of_the_wrong_shape(tiny_run, capsys, tmp_path):
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((2, 28, 28, 1), np.float32))
    status, _, err = run_cli(capsys, "predict", tiny_run, str(inputs))
    assert status == cli_utils.EXIT_FAILED
    assert "(8, 8, 1)" in err


def test_evaluate_a_run_on_its_test_split(tiny_run, capsys):
    status, out, _ = run_cli(capsys, "evaluate", tiny_run)
    assert status == 0
    result = json.loads(out)
    report = RunReport.load(tiny_run)
    assert result["accuracy"] == pytest.approx(report["ensemble_test_accuracy"], abs=1e-6)
    assert result["num_samples"] == report["data"]["num_test"]
    assert np.sum(result["confusion_matrix"]) == result["num_samples"]


def test_evaluate_an_onnx_export_on_arrays(tiny_run, capsys, tmp_path):
    onnx_file = os.path.join(tiny_run, "export", "model.onnx")
    status, _, err = run_cli(capsys, "evaluate", onnx_file)
    assert status == cli_utils.EXIT_USAGE and "--inputs" in err
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((4, 8, 8, 1), np.float32))
    np.save(y, np.array([0, 1, 2, 3]))
    status, out, _ = run_cli(capsys, "evaluate", onnx_file, "--inputs", str(x), "--labels", str(y))
    assert status == 0
    assert json.loads(out)["num_samples"] == 4


def test_export_a_run_again(tiny_run, capsys, tmp_path):
    out = tmp_path / "final_export"
    status, stdout, _ = run_cli(
        capsys, "export", tiny_run, "--model", "final", "--formats", "onnx", "--out", str(out)
    )
    assert status == 0, stdout
    assert os.path.isfile(out / "model.onnx") and not os.path.exists(out / "saved_model")
    # An existing export is kept unless --overwrite.
    status, _, err = run_cli(capsys, "export", tiny_run, "--out", str(out))
    assert status == cli_utils.EXIT_FAILED
    assert "overwrite" in err


def test_commands_on_a_directory_that_is_not_a_run(tmp_path, capsys):
    status, _, err = run_cli(capsys, "inspect", str(tmp_path))
    assert status == cli_utils.EXIT_FAILED
    assert "clidmu-tf train --out" in err


# Failures and Ctrl-C.


def test_a_failed_run_leaves_no_report_json(tmp_path, monkeypatch, capsys):
    def fail(self):
        raise RuntimeError("the accelerator caught fire")

    monkeypatch.setattr(training_job.TrainingJob, "_train_method", fail)
    out = tmp_path / "run"
    status, _, err = run_cli(capsys, "train", "--out", str(out), *TINY)
    assert status == cli_utils.EXIT_FAILED
    assert "caught fire" in err and RunReport.PARTIAL_NAME in err
    assert not (out / RunReport.FINAL_NAME).exists()
    with open(out / RunReport.PARTIAL_NAME) as handle:
        partial = json.load(handle)
    assert partial["status"] == "failed"
    assert partial["error"]["type"] == "RuntimeError"
    # A model that did not train is not left where predict would serve it.
    assert not (out / RunDirectory.MODEL).exists()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        RunReport.load(out)


def test_ctrl_c_keeps_the_snapshots_and_writes_an_interrupted_report(tmp_path, monkeypatch, capsys):
    record = EpochRecorder.on_epoch_end

    def interrupt_after_first_epoch(self, epoch, logs=None):
        record(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochRecorder, "on_epoch_end", interrupt_after_first_epoch)
    out = tmp_path / "run"
    status, stdout, _ = run_cli(capsys, "train", "--out", str(out), *TINY)
    assert status == cli_utils.EXIT_INTERRUPTED
    report = RunReport.load(out)
    assert report["status"] == "interrupted"
    assert len(report["method"]["epochs"]) == 1
    assert "baseline" not in report and "export" not in report
    assert len(report["ensemble"]["members"]) == 1
    assert os.path.isfile(out / "snapshots" / "clid_snapshot_epoch_0001.weights.h5")
    assert (out / "plots" / "clid_and_test_accuracy.png").is_file()
    assert "Status: interrupted" in stdout
    # The model printed is part-way through its second epoch, and the table says so.
    assert report["method"]["stopped_in_epoch"] == 2
    assert "clid-wnet (stopped in epoch 2 of 2)" in stdout


def test_run_report_is_written_atomically_and_only_when_finished(tmp_path):
    report = RunReport(tmp_path, {"epochs": 1})
    report["values"] = np.arange(3)
    report["diverged"] = {"loss": [1.5, float("nan"), np.float32("inf")]}
    report.save()
    assert not (tmp_path / RunReport.FINAL_NAME).exists()
    with open(tmp_path / RunReport.PARTIAL_NAME) as handle:
        assert json.load(handle)["status"] == "running"
    report.finish("completed")
    assert sorted(os.listdir(tmp_path)) == [RunReport.FINAL_NAME]
    assert RunReport.load(tmp_path)["values"] == [0, 1, 2]
    assert RunReport.load(tmp_path)["diverged"] == {"loss": [1.5, None, None]}
    with pytest.raises(ValueError, match="status"):
        report.finish("running")


def run_quick_search(capsys, out, *options):
    """`tune` of one trial of one epoch on 150 digits into `out`, plus `options`."""
    return run_cli(
        capsys, "tune", "--out", str(out), "--limit-train", "150", "--max-trials", "1",
        "--epochs", "1", "--verbose", "0", *options,
    )  # fmt: skip


def test_tune_runs_a_search_and_writes_a_summary(tmp_path, capsys):
    out = tmp_path / "search"
    status, stdout, _ = run_quick_search(capsys, out, "--virtual-step", "head")
    assert status == 0
    with open(out / "search_settings.json") as handle:
        settings = json.load(handle)
    assert settings["virtual_step"] == "head"
    # What the default came to, so that a later default cannot continue the search unnoticed.
    assert settings["weight_normalization"] == "class"
    with open(out / "summary.json") as handle:
        summary = json.load(handle)
    assert summary["objective"]["name"] == "val_clid"
    assert len(summary["trials"]) == 1
    assert "val_clean_accuracy" in stdout


def test_tune_batch_size_fixes_the_batch_size_the_search_would_choose(tmp_path, capsys):
    out = tmp_path / "search"
    status, _, err = run_quick_search(capsys, out, "--batch-size", "24")
    assert status == 0, err
    with open(out / "summary.json") as handle:
        (trial,) = json.load(handle)["trials"]
    assert trial["hyperparameters"]["batch_size"] == 24
    # Resuming the search with another batch size would rank two settings together.
    status, _, err = run_quick_search(capsys, out)
    assert status == cli_utils.EXIT_USAGE and "--batch-size 24 then, None now" in err


def test_the_baseline_beside_a_head_only_virtual_step_trains_without_one(tmp_path, capsys):
    from clidmu_tf.cli.run_directory import load_keras_file

    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "train", "--out", str(out), "--limit-train", "150", "--backbone", "mlp",
        "--epochs", "1", "--batch-size", "50", "--export-formats", "none", "--verbose", "0",
        "--virtual-step", "head",
    )  # fmt: skip
    assert status == 0, err
    report = RunReport.load(out)
    assert report["config"]["virtual_step"] == "head"
    assert report["baseline_test_accuracy"] is not None
    assert load_keras_file(out / RunDirectory.MODEL).virtual_step == "head"
    assert load_keras_file(out / RunDirectory.BASELINE_MODEL).virtual_step == "full"


MIRRORED_ON_TWO_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from clidmu_tf.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_under_a_mirrored_strategy(tmp_path):
    # In a process of its own: TensorFlow's collective ops keep per-process state, and two
    # MirroredStrategy runs over the same devices in one process can collide.
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable, "-c", MIRRORED_ON_TWO_CPUS, "train", "--out", str(out),
            "--distribute", "mirrored", "--baseline", "none", "--export-formats", "none", *TINY,
            # Snapshots ranked by CLID on a held-out selection set, here as well.
            "--snapshot-selection", "held-out",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = RunReport.load(out)
    assert report["distribution"] == {"strategy": "MirroredStrategy", "replicas": 2, "workers": 1}
    assert len(report["method"]["epochs"]) == 2 and "baseline" not in report
    # A tenth of the 200 held out to rank the snapshots by their CLID; the label issues
    # cover all 200 given labels, the held-out ones too.
    assert report["data"]["num_train"] == 180 and report["data"]["num_selection"] == 20
    assert all(np.isfinite(entry["held_out_clid"]) for entry in report["method"]["epochs"])
    assert read_snapshot_manifest(RunDirectory(out).snapshots)["monitor"] == "held_out_clid"
    labels = RunDirectory(out).training_labels()
    assert len(labels["indices"]) == len(set(labels["indices"])) == 200
    issues = report["label_issues"]
    assert issues["num_samples"] == 200
    assert issues["num_flipped"] == int(np.sum(labels["given"] != labels["true"]))
    # inspect and label_issues mark the held-out samples: those make_training_data holds
    # out for the same options.
    from clidmu_tf import label_issues
    from clidmu_tf.pipelines import make_training_data

    held_out = make_training_data(
        "digits", noise="instance", noise_rate=0.4, train_size=200, selection_size=20,
        batch_size=50, augment=None, seed=0,
    ).selection_indices  # fmt: skip
    assert main(["inspect", str(out), "--all", "--output", str(tmp_path / "all.csv")]) == 0
    with open(tmp_path / "all.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(int(row["index"]) for row in rows if row["held_out"] == "1") == list(held_out)
    assert sum(row["held_out"] == "0" for row in rows) == 180
    marks = label_issues(str(out))["held_out"]
    np.testing.assert_array_equal(np.sort(labels["indices"][marks]), held_out)


@pytest.mark.parametrize(
    "module",
    [
        "clidmu_tf.cli.run_report",
        "clidmu_tf.cli.run_directory",
        "clidmu_tf.cli.training_job",
        "clidmu_tf.cli.label_errors",
    ],
)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_tune_fails_when_no_trial_completed(tmp_path, capsys, monkeypatch):
    # Every trial failing (keras-tuner logs each error and goes on) once exited 0 with
    # `"best": null`: a script would have read success.
    import clidmu_tf.tuning

    def every_trial_failed(*args, **kwargs):
        return None, {"objective": {"name": "val_clid"}, "trials": [], "best": None}

    monkeypatch.setattr(clidmu_tf.tuning, "run_search", every_trial_failed)
    status, _, err = run_quick_search(capsys, tmp_path / "search")
    assert status == cli_utils.EXIT_FAILED and "no trial completed" in err


def test_a_meta_batch_that_does_not_split_evenly_over_the_replicas_is_refused(tmp_path, capsys):
    # Two workers with --meta-batch-size 3 waited for each other for ever: one replica's
    # share of 1 sample skipped its meta step. conftest gives this process two logical CPUs,
    # two replicas; the refusal comes before any collective runs.
    out = tmp_path / "run"
    status, _, err = run_cli(
        capsys, "train", "--out", str(out), "--distribute", "mirrored", "--meta-batch-size",
        "3", "--baseline", "none", "--export-formats", "none", *TINY,
    )  # fmt: skip
    assert status == cli_utils.EXIT_FAILED
    assert "multiple of 2 of at least 4" in err and "--meta-batch-size=3" in err, err
    assert not out.exists() or not any(out.iterdir())
