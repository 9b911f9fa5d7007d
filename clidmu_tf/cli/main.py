"""The `clidmu-tf` command line: the top parser and the dispatch to its sub-commands.

Each sub-command lives in a module of its own (`train`, `export`, `predict`, `evaluate`,
`inspect`, `tune`) that registers its arguments and runs it. Every argument is checked before
any data is loaded or model built, so a typo fails in a second with a message that lists what
is accepted.
"""

import json
import os
import re
import sys

from clidmu_tf.cli import cli_utils, evaluate, export, inspect, predict, train, tune
from clidmu_tf.cli.run_report import RunReport

# An error message longer than this is cut on the terminal.
SHOWN_ERROR_CHARACTERS = 2000
# In the order `clidmu-tf --help` lists them.
COMMANDS = (train, export, predict, evaluate, inspect, tune)


def build_parser():
    """The `clidmu-tf` argument parser, with one sub-parser per sub-command."""
    from clidmu_tf import __version__

    parser = cli_utils.ArgumentParser(
        prog=cli_utils.PROG,
        allow_abbrev=False,
        description="Train Keras classifiers on noisy labels without a clean validation set "
        "(CLID-MU, Hu et al., KDD 2025).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command in COMMANDS:
        command.register_subparser(commands)
    return parser


def main(argv=None):
    """Runs the `clidmu-tf` command line; returns the exit status.

    Args:
        argv: the arguments, without the program name; `sys.argv[1:]` when None.

    Returns:
        0 on success, 1 when the command failed, 2 for a usage error (argparse exits with it
        directly), 130 for a training run stopped by Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    cli_utils.quiet_tensorflow(args.verbose)
    partial = os.path.join(getattr(args, "out", None) or "", RunReport.PARTIAL_NAME)
    partial_before = _read_text(partial) if args.command == "train" else None
    try:
        return args.handler(args) or 0
    except Exception as error:
        # OSError covers missing files, permissions and a --out locked by another run; a
        # TensorFlow op error, a failure inside the input pipeline (a damaged image decoded
        # in `tf.data`). Anything else is a bug, shown with its traceback.
        if not isinstance(error, (ValueError, OSError, RuntimeError, ImportError)) and not (
            _is_tensorflow_error(error)
        ):
            raise
        message = cli_utils.cli_spelling(_cause(error))
        if len(message) > SHOWN_ERROR_CHARACTERS:
            # TensorFlow errors can quote whole tensors; the report keeps the full text.
            message = (
                f"{message[:SHOWN_ERROR_CHARACTERS]}... ({len(message) - SHOWN_ERROR_CHARACTERS} "
                "more characters)"
            )
        print(f"{cli_utils.PROG} {args.command}: error: {message}", file=sys.stderr)
        # A multi-worker run cannot be resumed (`train` refuses --resume with it).
        resumable = getattr(args, "distribute", None) != "multiworker"
        if args.command == "train" and resumable and _failed_here(partial, partial_before):
            print(
                f"The run failed; its partial report is {partial}. Once the cause is removed, "
                "the same command with --resume continues it from its last completed epoch.",
                file=sys.stderr,
            )
        return cli_utils.EXIT_FAILED


def _is_tensorflow_error(error):
    # TensorFlow is imported only by the commands that need it.
    tensorflow = sys.modules.get("tensorflow")
    return tensorflow is not None and isinstance(error, tensorflow.errors.OpError)


# The last `SomethingError: text` line of a TensorFlow error raised from Python code run in
# the graph (`tf.numpy_function`): the error that code raised, without the traceback.
_PYTHON_ERROR_LINE = re.compile(r"^\w+(?:Error|Exception): (.+)$", re.MULTILINE)


def _cause(error):
    """The text to show for `error`: a TensorFlow op error's Python cause when it has one."""
    if not _is_tensorflow_error(error):
        return error
    causes = _PYTHON_ERROR_LINE.findall(error.message)
    return causes[-1] if causes else error.message.strip().splitlines()[0]


def _failed_here(partial, before):
    """Whether `partial` is the report of a run that failed here, not one refused before it
    began: a run locked by another process, or an unfinished run whose --resume was refused,
    keeps its own report as it was (`before`, its text when the command started)."""
    text = _read_text(partial)
    if text is None or text == before:
        return False
    try:
        return json.loads(text).get("status") == "failed"
    except ValueError:
        return False


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None
