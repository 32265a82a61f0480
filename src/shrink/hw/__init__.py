"""Hardware profiles and cost: a measured CPU latency table and roofline models of accelerators."""

from shrink.hw.estimate import Estimate, RankCorrelation, estimate, layer_cost, policy_costs, rank_correlation
from shrink.hw.layers import LayerSpec, trace_layers
from shrink.hw.measured import LatencyTable
from shrink.hw.policy import FP32, LayerChoice, Policy
from shrink.hw.profile import Profile, bundled_profiles, load_profile

__all__ = [
    "Estimate",
    "RankCorrelation",
    "estimate",
    "layer_cost",
    "policy_costs",
    "rank_correlation",
    "LayerSpec",
    "trace_layers",
    "LatencyTable",
    "FP32",
    "LayerChoice",
    "Policy",
    "Profile",
    "bundled_profiles",
    "load_profile",
]
