"""The cluster of `--distribute multiworker`: TF_CONFIG, checked before TensorFlow reads it,
and which worker is the chief."""

import json
import os

TF_CONFIG = "TF_CONFIG"
EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)
# The jobs of a MultiWorkerMirroredStrategy cluster.
MULTI_WORKER_JOBS = ("chief", "worker")
# Long enough to show a whole cluster of a few workers, short enough for one screen.
SHOWN_CHARACTERS = 400


def read_tf_config(environ=None):
    """Parses and checks the `TF_CONFIG` environment variable of a multi-worker job.

    `MultiWorkerMirroredStrategy` reads `TF_CONFIG`, but a malformed one gives a bare JSON
    error or a hang waiting for a worker that does not exist; this check names `TF_CONFIG`
    and quotes it first.

    Args:
        environ: the environment to read (`os.environ` when None).

    Returns:
        A dict `{"cluster": {job: [address, ...]}, "task": {"type": job, "index": int}}`.

    Raises:
        ValueError: when `TF_CONFIG` is unset, not a JSON object, has no `cluster` of
            non-empty lists of `host:port` addresses (ports 1-65535, no address twice, jobs
            `chief` (one at most) and `worker` only), or no `task` whose `type` names a job
            of the cluster and whose `index` is a position in that job's list. The message
            names `TF_CONFIG` and quotes the received value.

    Example:

    >>> config = read_tf_config({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:1"]}, '
    ...                          '"task": {"type": "worker", "index": 1}}'})
    >>> config["task"], is_chief(config)
    ({'type': 'worker', 'index': 1}, False)
    """
    environ = os.environ if environ is None else environ
    text = environ.get(TF_CONFIG)
    if not text:
        raise ValueError(
            f"--distribute multiworker needs the {TF_CONFIG} environment variable on every "
            f"worker, e.g. {EXAMPLE}"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise _invalid(text, f"valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(config, dict):
        raise _invalid(text, "a JSON object with 'cluster' and 'task'")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise _invalid(text, "a 'cluster' object mapping job names to lists of host:port")
    unsupported = sorted(set(cluster) - set(MULTI_WORKER_JOBS))
    if unsupported:
        # MultiWorkerMirroredStrategy has no parameter servers or evaluators: a task of
        # another job would wait for peers that never join.
        raise _invalid(text, f"only the jobs {list(MULTI_WORKER_JOBS)} in 'cluster', not "
                             f"{unsupported}")
    if len(cluster.get("chief", [])) > 1:
        raise _invalid(text, "at most one 'chief' address")
    for job, addresses in cluster.items():
        if (
            not isinstance(addresses, list)
            or not addresses
            or not all(_is_address(address) for address in addresses)
        ):
            raise _invalid(
                text, f"cluster[{job!r}] to be a non-empty list of 'host:port' (port 1-65535)"
            )
    addresses = [address for job in cluster.values() for address in job]
    if len(set(addresses)) < len(addresses):
        # Two tasks cannot listen on one address: the job would wait for ever.
        raise _invalid(text, "every task at an address of its own")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise _invalid(text, f"a 'task' object whose 'type' is one of {sorted(cluster)}")
    index, size = task.get("index"), len(cluster[task["type"]])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise _invalid(
            text, f"task['index'] to be an integer in [0, {size}) for job {task['type']!r}"
        )
    return config


def is_chief(config):
    """Whether this task writes the results: the `chief`, else worker 0 (Keras's rule).

    Args:
        config: a dict from `read_tf_config`.

    Returns:
        bool.
    """
    task = config["task"]
    if task["type"] == "chief":
        return True
    return "chief" not in config["cluster"] and task["type"] == "worker" and task["index"] == 0


def _is_address(address):
    """Whether `address` is `host:port` with a port in [1, 65535]."""
    if not isinstance(address, str):
        return False
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


def _invalid(text, expected):
    shown = text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "..."
    return ValueError(
        f"Received an invalid value for the {TF_CONFIG} environment variable, expected "
        f"{expected}, e.g. {EXAMPLE}. Received: {TF_CONFIG}={shown!r}"
    )
