"""The README stays true: its set-up commands, its command lines and its Python."""

import pathlib
import re
import shlex

import pytest

from clidmu_tf.cli.main import build_parser

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETUP_HEADING = "## Set up on a fresh machine"


def section(heading):
    start = README.index(heading)
    following = README.find("\n## ", start + len(heading))
    return README[start : following if following != -1 else len(README)]


def code_blocks(text, language):
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def setup_commands():
    return [
        line.strip()
        for block in code_blocks(section(SETUP_HEADING), "bash")
        for line in block.splitlines()
        if line.strip()
    ]


def test_setup_has_exactly_two_commands_install_and_run_and_install_and_test():
    commands = setup_commands()
    assert len(commands) == 2
    main_job, tests = commands
    for command in commands:
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert ".venv/bin/clidmu-tf train --out " in main_job
    assert tests.endswith(".venv/bin/python -m pytest -q")


def test_readme_test_command_is_the_ci_command():
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ci_command = [line for line in ci_lines if "pytest" in line]
    assert ci_command == [setup_commands()[1]]


def command_lines():
    lines = []
    for block in code_blocks(README, "bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("clidmu-tf "):
                lines.append(line)
    return lines


def test_the_readme_shows_command_lines():
    assert len(command_lines()) >= 10


@pytest.mark.parametrize("line", command_lines())
def test_every_readme_command_line_parses(line):
    # Parsing only: an option renamed or a choice dropped fails here, nothing is run.
    arguments = build_parser().parse_args(shlex.split(line)[1:])
    assert callable(arguments.handler)


def test_the_setup_command_parses():
    main_job = setup_commands()[0].split("&& .venv/bin/clidmu-tf ")[1]
    assert build_parser().parse_args(shlex.split(main_job)).command == "train"


@pytest.mark.parametrize("block", code_blocks(README, "python"))
def test_python_blocks_compile_and_import_what_they_name(block):
    compile(block, "README.md", "exec")
    for module, names in re.findall(r"^from (clidmu_tf[\w.]*) import (.+)$", block, re.M):
        imported = __import__(module, fromlist=["_"])
        for name in names.split("#")[0].split(","):
            assert hasattr(imported, name.strip()), f"{module}.{name.strip()}"


def test_the_quickstart_runs():
    (quickstart,) = code_blocks(section("## Quickstart"), "python")
    assert "model.fit(" in quickstart
    # One epoch instead of the README's five keeps the suite fast; the code is the same.
    namespace = {}
    exec(compile(quickstart.replace("epochs=5", "epochs=1"), "README.md", "exec"), namespace)
    assert namespace["suspicious"].shape == (20,)
