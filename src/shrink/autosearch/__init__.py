"""Sensitivity analysis, exact budgeted mixed-precision allocation and hardware-aware compression search."""

from shrink.autosearch.allocate import Allocation, Option, allocate, brute_force
from shrink.autosearch.apply import apply_policy, calibrate_inputs
from shrink.autosearch.mixed_precision import MixedPrecision, plan_mixed_precision
from shrink.autosearch.result import Point, SearchResult, pareto_front
from shrink.autosearch.search import CompressionSearch, run_search
from shrink.autosearch.sensitivity import hessian_sensitivity, hessian_traces, hutchinson_trace, measured_sensitivity
from shrink.autosearch.trials import run_trials, shutdown_ray

__all__ = [
    "Allocation",
    "Option",
    "allocate",
    "brute_force",
    "apply_policy",
    "calibrate_inputs",
    "MixedPrecision",
    "plan_mixed_precision",
    "hessian_sensitivity",
    "hessian_traces",
    "hutchinson_trace",
    "measured_sensitivity",
    "Point",
    "SearchResult",
    "pareto_front",
    "CompressionSearch",
    "run_search",
    "run_trials",
    "shutdown_ray",
]
