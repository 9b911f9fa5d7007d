"""The label-error benchmark's smoke mode: one tiny cell, written at once and resumed."""

import json

from clidmu_tf.label_issue_ranking import COUNT_ESTIMATION_METHOD

from tests.benchmark_scripts import load_benchmark_script


def test_quick_run_writes_one_cell_and_resumes(tmp_path, capsys):
    benchmark = load_benchmark_script("label_errors")
    output, work = tmp_path / "results.jsonl", tmp_path / "runs"
    argv = ["--quick", "--output", str(output), "--work-dir", str(work)]
    assert benchmark.main(argv) == 0
    [line] = output.read_text().splitlines()
    result = json.loads(line)
    assert result["cell"] == "digits-symmetric-0.4-seed0-quick"
    assert set(result["rankings"]) == {
        "ensemble", "final_weight", "mean_weight", "early_loss", "margin",
        "cleanlab_cv_logistic",
    }  # fmt: skip
    assert all(0.0 <= scores["roc_auc"] <= 1.0 for scores in result["rankings"].values())
    assert result["num_flipped"] > 0 and result["seconds"]["cleanlab_cv_logistic"] > 0
    # The product's suggestion is the largest early count of COUNT_ESTIMATION_METHOD.
    assert result["suggested_num_issues"] == (
        result["count_estimates"]["early_epochs_max"][COUNT_ESTIMATION_METHOD]
    )
    assert "[1/1]" in capsys.readouterr().out

    # A finished cell is skipped; a cell whose run was kept is scored again without training.
    assert benchmark.main(argv) == 0
    assert "already in" in capsys.readouterr().out
    assert len(output.read_text().splitlines()) == 1
    output.unlink()
    assert benchmark.main(argv) == 0
    assert "run reused" in capsys.readouterr().out
    assert json.loads(output.read_text())["rankings"] == result["rankings"]

    benchmark.main(["--summary", "--output", str(output)])
    table = capsys.readouterr().out
    assert "| digits | symmetric:0.4 | 1 | ensemble |" in table
    assert f"| digits | symmetric:0.4 | early_epochs_max / {COUNT_ESTIMATION_METHOD} | 1 |" in table
