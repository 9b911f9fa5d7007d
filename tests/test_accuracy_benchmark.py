"""Smoke test of benchmarks/accuracy.py: a tiny run is recorded once and skipped on restart."""

import json

import numpy as np

from tests.benchmark_scripts import load_benchmark_script


def test_quick_run_is_recorded_and_skipped_when_restarted(tmp_path, capsys):
    accuracy = load_benchmark_script("accuracy")
    results = tmp_path / "results.jsonl"
    argv = ["--quick", "--results", str(results), "--limit-train", "150"]
    accuracy.main(argv)
    lines = results.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["run"]["config"]["method"] == "clid-wnet"
    assert len(record["test_accuracy"]) == len(record["meta_clid"]) == 2
    assert record["best"] == max(record["test_accuracy"])
    assert record["last"] == record["test_accuracy"][-1]
    assert 1 <= len(record["ensemble_epochs"]) <= 2
    # The job's rule recomputed from the per-epoch logits is the job's own ensemble; by
    # default it is the paper's, so the benchmark's own meta-set CLID is the job's.
    assert record["run"]["config"]["snapshot_selection"] == "meta-set"
    assert record["num_selection"] == 0
    for rule in ("selection_top5", "paper_top5"):
        assert record["rules"][rule]["epochs"] == sorted(record["ensemble_epochs"])
        assert np.isclose(record["rules"][rule]["accuracy"], record["ensemble"])
    np.testing.assert_allclose(record["selection_clid"], record["meta_clid"], rtol=1e-5)

    capsys.readouterr()
    accuracy.main(argv)
    assert "0 to run" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 1

    accuracy.main(["--summary", "--results", str(results)])
    table = capsys.readouterr().out
    assert "| digits | symmetric:0.4 | mlp | clid-wnet |" in table


def test_a_line_cut_short_by_a_crash_is_ignored_and_not_glued_to(tmp_path):
    accuracy = load_benchmark_script("accuracy")
    results = tmp_path / "results.jsonl"
    results.write_text('{"run": 1}\n{"run": ')
    accuracy.append_result(str(results), {"run": 2})
    assert [record["run"] for record in accuracy.load_results(str(results))] == [1, 2]


def test_lowest_breaks_ties_towards_the_earlier_epoch():
    accuracy = load_benchmark_script("accuracy")
    scores = [3.0, 1.0, 2.0, 1.0, 5.0]
    assert accuracy.lowest(scores, [1, 2, 3, 4, 5], k=2) == [2, 4]
    assert accuracy.lowest(scores, [3, 4, 5], k=2) == [3, 4]


def test_the_virtual_step_option_reaches_the_meta_learning_runs_only():
    accuracy = load_benchmark_script("accuracy")
    argv = ["--datasets", "digits", "--noises", "symmetric:0.6", "--backbones", "small_cnn",
            "--methods", "ce", "clid-wnet", "--seeds", "0"]  # fmt: skip
    runs = accuracy.planned_runs(accuracy.parse_args(argv + ["--virtual-step", "head"]))
    steps = {run["config"]["method"]: run["config"].get("virtual_step") for run in runs}
    # Cross-entropy takes no virtual step (the job refuses "head" with it).
    assert steps == {"ce": None, "clid-wnet": "head"}
    # Without the option the runs are those recorded before it existed, so they stay done.
    default = accuracy.planned_runs(accuracy.parse_args(argv))
    assert all("virtual_step" not in run["config"] for run in default)


def test_the_weight_normalization_option_reaches_the_meta_weight_net_runs_only():
    accuracy = load_benchmark_script("accuracy")
    argv = ["--datasets", "digits", "--noises", "symmetric:0.6", "--backbones", "small_cnn",
            "--methods", "ce", "clid-wnet", "clid-vri", "wnet-clean-meta", "--seeds", "0",
            "--weight-normalization", "class"]  # fmt: skip
    runs = accuracy.planned_runs(accuracy.parse_args(argv))
    chosen = {run["config"]["method"]: run["config"].get("weight_normalization") for run in runs}
    # The job refuses it where there are no sample weights (cross-entropy, VRI).
    assert chosen == {"ce": None, "clid-vri": None, "clid-wnet": "class", "wnet-clean-meta": "class"}


def test_a_run_recorded_as_batch_normalised_trains_batch_normalised(monkeypatch, tmp_path):
    # Runs with the authors' normalisation are recorded without the key (so the runs made
    # before the option existed stay done), and the job's own default is another.
    from clidmu_tf.cli import training_job

    accuracy = load_benchmark_script("accuracy")
    argv = ["--datasets", "digits", "--noises", "symmetric:0.6", "--backbones", "mlp",
            "--methods", "ce", "clid-wnet", "clid-vri", "--seeds", "0"]  # fmt: skip
    given = {}

    def refuse_to_train(self, config, *args, **kwargs):
        given[config["method"]] = config.get("weight_normalization")
        raise KeyboardInterrupt

    monkeypatch.setattr(training_job.TrainingJob, "__init__", refuse_to_train)
    for weights in ("batch", "class"):
        args = accuracy.parse_args(argv + ["--weight-normalization", weights])
        for run in accuracy.planned_runs(args):
            try:
                accuracy.execute(run, str(tmp_path))
            except KeyboardInterrupt:
                pass
        assert given == {"ce": None, "clid-wnet": weights, "clid-vri": None}
