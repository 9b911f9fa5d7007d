"""clidmu-tf: train Keras classifiers on noisy labels without a clean validation set."""

__version__ = "0.1.0"
