"""`python -m clidmu_tf`: the `clidmu-tf` command line."""

import sys

from clidmu_tf.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
