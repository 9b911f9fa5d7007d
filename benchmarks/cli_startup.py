"""How long `clidmu-tf` takes to answer before any work: `--help`, `--version` and an argument
error, against importing TensorFlow alone.

Each command runs in a fresh interpreter (`python -m clidmu_tf ...`), as a user's shell runs
it; the commands alternate in rounds so that machine noise hits all alike. Reported: the
median wall time and the median CPU time (user + system) of each, and each one's wall time
over `import tensorflow`'s. On a busy machine the CPU time is the steadier figure: it leaves
out the waiting for a core.

    python benchmarks/cli_startup.py --rounds 5

The load average is printed before and after: other processes on the machine inflate the
figures, the ratios less than the absolute times.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "clidmu-tf --help": ["-m", "clidmu_tf", "--help"],
    "clidmu-tf --version": ["-m", "clidmu_tf", "--version"],
    "clidmu-tf train --epoch 3 (a typo)": ["-m", "clidmu_tf", "train", "--out", "x", "--epoch", "3"],
    "python -c 'import tensorflow'": ["-c", "import tensorflow"],
}
REFERENCE = "python -c 'import tensorflow'"


def timed(arguments):
    """`(wall, cpu)` seconds of running `python arguments` to its exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    walls = {name: [] for name in COMMANDS}
    cpus = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, arguments in COMMANDS.items():
            wall, cpu = timed(arguments)
            walls[name].append(wall)
            cpus[name].append(cpu)
    print(f"load average after: {os.getloadavg()}")
    wall = {name: statistics.median(values) for name, values in walls.items()}
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    print(f"{'command':<40}{'wall s':>8}{'CPU s':>8}{'wall over import tensorflow':>29}")
    for name in COMMANDS:
        print(f"{name:<40}{wall[name]:>8.2f}{cpu[name]:>8.2f}{wall[name] / wall[REFERENCE]:>29.3f}")
    print(json.dumps({"rounds": args.rounds, "wall_s": walls, "cpu_s": cpus}))


if __name__ == "__main__":
    main()
