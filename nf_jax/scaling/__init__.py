"""nf_jax.scaling: scaling laws and loss-to-loss prediction from logged losses.

Implements Brandfonbrener, Anand, Vyas, Malach & Kakade (2024), "Loss-to-Loss
Prediction: Scaling Laws for All Datasets", and the single-dataset laws it
builds on. Depends on numpy only (matplotlib for
plots, imported lazily); imports nothing from the training stack.

    from nf_jax import scaling
    table = scaling.load("runs/sweep")            # or a CSV with a mapping
    res = scaling.fit_law("chinchilla", {"N": table.numeric("N"),
                                         "D": table.numeric("D")},
                          table.numeric("train/loss"))
"""

from nf_jax.scaling.errors import ScalingDataError, ScalingFitWarning
from nf_jax.scaling.fit import FitResult, batched_lbfgs, fit_law
from nf_jax.scaling.laws import LAWS, get_law
from nf_jax.scaling.loss_to_loss import (Relation, fit_loss_to_loss, pair_runs,
                                         test_to_test, train_to_test, train_to_train,
                                         translate_law)
from nf_jax.scaling.readers import Table, drop_highest, load, read_runs, read_table

__all__ = [
    "ScalingDataError", "ScalingFitWarning", "FitResult", "batched_lbfgs", "fit_law",
    "LAWS", "get_law", "Relation", "fit_loss_to_loss", "pair_runs", "test_to_test",
    "train_to_test", "train_to_train", "translate_law", "Table", "drop_highest",
    "load", "read_runs", "read_table",
]
