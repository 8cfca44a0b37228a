"""Trainers for toast_crab generators and the ``crab-train`` command.

Importing this package imports TensorFlow and Keras. The command-line tool is
``toast_crab.training.cli`` (``crab-train``).
"""

from .crab_bce import (
    FAMILY,
    CrabBCE,
    CrabBCEConfig,
    compare_chunks,
    make_training_dataset,
    robust_sigma,
    train_crab_bce,
)
from .wgan_gp import WganGP, WganGPConfig, gradient_penalty, selection_score, train_wgan_gp

__all__ = [
    "FAMILY",
    "CrabBCE",
    "CrabBCEConfig",
    "compare_chunks",
    "make_training_dataset",
    "robust_sigma",
    "train_crab_bce",
    "WganGP",
    "WganGPConfig",
    "gradient_penalty",
    "selection_score",
    "train_wgan_gp",
]
