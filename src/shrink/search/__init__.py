"""Sensitivity analysis, exact budgeted mixed-precision allocation and hardware-aware compression search."""

from shrink.search.allocate import Allocation, Option, allocate, brute_force
from shrink.search.apply import apply_policy, calibrate_inputs
from shrink.search.mixed_precision import MixedPrecision, plan_mixed_precision
from shrink.search.result import Point, SearchResult, pareto_front
from shrink.search.search import CompressionSearch, run_search
from shrink.search.sensitivity import hessian_sensitivity, hessian_traces, hutchinson_trace, measured_sensitivity
from shrink.search.trials import run_trials, shutdown_ray

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
    "search",
]


from shrink.api import callable_package, search  # noqa: E402

callable_package(__name__, search)
