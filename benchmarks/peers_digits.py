"""Section: shrink's int8 next to torchao, NNCF and Intel Neural Compressor on the digits CNN.

The same peer methods, calibration batches, thread count and timing as the MiniLM half (section ``peers_quant``), on
the zoo's digits CNN scored on its 360 test images.
"""

from __future__ import annotations

from benchmarks.common import Section
from benchmarks.peers_quant import digits_peers

__all__ = ["TITLE", "run"]

TITLE = "Quantization next to torchao, NNCF and Intel Neural Compressor: digits CNN"


def run(quick: bool) -> Section:
    section = Section(TITLE, intro=__doc__.split("\n\n", 1)[1].strip())
    digits_peers(quick, section)
    return section
