"""Test set-up shared by all test files.

Two logical CPU devices are configured before TensorFlow initialises, so that
MirroredStrategy can be tested on a machine without GPUs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One MirroredStrategy over the two logical CPUs, shared by every test that needs one.

    TensorFlow caches collective parameters per process by instance key, and each new
    strategy numbers its collectives from the same start: a second strategy in the same
    process would reuse keys with other shapes ("Shape mismatch in the collective instance").
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
