"""The `clidmu-tf` command-line application, apart from the library it drives.

`main.py` holds the top parser and `main`, the entry point; `train.py`, `export.py`,
`predict.py`, `evaluate.py`, `inspect.py` and `tune.py` each register and run one sub-command;
`cli_utils.py` holds what they share. The other modules are the application's parts: the
training job, the run directory and its report, the data sources, loading a trained model
back, reading input files, ranking label errors and drawing the plots.
"""
