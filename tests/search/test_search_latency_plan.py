"""The homogeneous fallback of the latency planner: least-loss all-int8 and all-fp32 policies, cheapest first."""

from __future__ import annotations

from shrink.autosearch.allocate import Option
from shrink.autosearch.latency_plan import _homogeneous
from shrink.hw.policy import LayerChoice
from shrink.hw.profile import load_profile


def test_homogeneous_policies_pick_least_loss_option_of_each_kernel_kind():
    profile = load_profile("cpu")
    assert profile.measured is not None and profile.measured.int8_kernels

    def opt(bits: int, loss: float, ms: float) -> Option:
        return Option(LayerChoice(bits=bits), loss, {"latency": ms / 1e3})

    opts = {
        "a": [opt(32, 0.0, 1.0), opt(8, 0.1, 0.5), opt(4, 0.5, 0.5)],
        "b": [opt(32, 0.0, 2.0), opt(16, 0.0, 2.0), opt(8, 0.2, 0.6), opt(2, 3.0, 0.6)],
    }
    (int8, int8_loss), (fp32, fp32_loss) = _homogeneous(opts, profile)
    assert int8 == {"a": LayerChoice(bits=8), "b": LayerChoice(bits=8)} and abs(int8_loss - 0.3) < 1e-12
    assert fp32 == {} and fp32_loss == 0.0  # fp32 everywhere is the default policy (bits 16 runs as fp32, loss 0)
