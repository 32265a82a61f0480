"""Sensitivity analysis, exact budgeted mixed-precision allocation and hardware-aware compression search."""

from shrink.search.allocate import Allocation, Option, allocate, brute_force
from shrink.search.apply import apply_policy, calibrate_inputs
from shrink.search.mixed_precision import MixedPrecision, plan_mixed_precision
from shrink.search.result import Point, SearchResult, pareto_front
from shrink.search.search import CompressionSearch, run_search
from shrink.search.sensitivity import hessian_sensitivity, hessian_traces, hutchinson_trace, measured_sensitivity
from shrink.search.trials import run_trials, shutdown_ray

__all__ = [
    "Allocation", "Option", "allocate", "brute_force", "apply_policy", "calibrate_inputs", "MixedPrecision",
    "plan_mixed_precision", "hessian_sensitivity", "hessian_traces", "hutchinson_trace", "measured_sensitivity",
    "Point", "SearchResult", "pareto_front", "CompressionSearch", "run_search", "run_trials", "shutdown_ray", "search",
]


def search(model, config, *, inplace: bool = False, **ctx):  # type: ignore[no-untyped-def]
    """The ``search`` verb: run a ``search`` / ``mixed_precision`` config on ``model`` (a copy unless ``inplace``)
    with context keywords (``example_inputs``, ``train``, ``calibration``, ``val``, ``out_dir``...)."""
    from shrink.api import Context, apply
    from shrink.errors import ConfigError

    if getattr(config, "family", None) != "search":
        raise ConfigError(f"shrink.search.search() runs search configs, got {type(config).__name__}")
    return apply(model, config, Context(**ctx), inplace=inplace)
