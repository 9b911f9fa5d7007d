"""benchmarks/step_cost.py refuses bad arguments before it builds or times anything."""

import pytest

from tests.benchmark_scripts import load_benchmark_script


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rounds", "0"], "--rounds: expected a positive integer. Received: '0'"),
        (["--steps", "0"], "--steps: expected a positive integer. Received: '0'"),
        (["--warmup", "1"], "--warmup: expected an integer of at least 2"),
        (["--meta-every", "0"], "--meta-every: expected a positive integer. Received: '0'"),
        (["--batch", "1"], "--batch: expected an integer of at least 2"),
        (["--measure-memory", "nosuch"], "--measure-memory: expected one of"),
        (["--json", "no/such/folder/x.json"], "--json: its folder does not exist"),
    ],
)
def test_bad_arguments_are_refused_before_any_run(argv, message, capsys, monkeypatch):
    step_cost = load_benchmark_script("step_cost")
    monkeypatch.setattr(step_cost, "make_model", lambda *args: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as exit_info:
        step_cost.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_round_that_does_not_hold_whole_meta_periods_is_flagged(capsys):
    step_cost = load_benchmark_script("step_cost")
    args = step_cost.parse_args(["--steps", "6", "--meta-every", "5"])
    assert (args.steps, args.meta_every, args.warmup) == (6, 5, 6)
    assert "--steps 6 is not a multiple of --meta-every 5" in capsys.readouterr().err
    step_cost.parse_args(["--steps", "10", "--meta-every", "5"])
    assert capsys.readouterr().err == ""
