"""Low-rank decomposition: truncated SVD for Linear, Tucker-2 and CP for Conv2d, rank by energy or parameter
budget. Decomposed layers become :class:`Factorized` modules (standard layers in sequence): they save, reload
and export to ONNX like any other layer."""

from shrink.lowrank.cp import cp_conv, cp_factors
from shrink.lowrank.factorized import Factorized
from shrink.lowrank.rank import cp_budget_rank, energy_rank, svd_budget_rank, tucker_budget_ranks
from shrink.lowrank.stage import CPDecomposition, SVDDecomposition, TuckerDecomposition, replace_module
from shrink.lowrank.svd import singular_values, svd_linear
from shrink.lowrank.tucker import mode_singular_values, tucker2_conv, tucker2_factors

__all__ = [
    "Factorized",
    "svd_linear",
    "singular_values",
    "tucker2_conv",
    "tucker2_factors",
    "mode_singular_values",
    "cp_conv",
    "cp_factors",
    "energy_rank",
    "svd_budget_rank",
    "tucker_budget_ranks",
    "cp_budget_rank",
    "SVDDecomposition",
    "TuckerDecomposition",
    "CPDecomposition",
    "replace_module",
]
