"""Hyperparameter search without clean labels: keras-tuner with CLID as the objective."""

from clidmu_tf.tuning.clidmu_hyper_model import CLIDMUHyperModel
from clidmu_tf.tuning.held_out_validation import HeldOutValidation, held_out_scores
from clidmu_tf.tuning.search import OBJECTIVES, TUNERS, run_search, search_summary

__all__ = [
    "CLIDMUHyperModel",
    "HeldOutValidation",
    "OBJECTIVES",
    "TUNERS",
    "held_out_scores",
    "run_search",
    "search_summary",
]
