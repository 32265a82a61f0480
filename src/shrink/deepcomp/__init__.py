"""Deep Compression (Han et al., 2016): magnitude pruning, k-means weight sharing with trained centroids, and a
Huffman-coded file (relative positions + cluster indices) that decodes back to exactly the shared weights."""

from shrink.deepcomp import huffman
from shrink.deepcomp.container import MAGIC, VERSION, TensorStats, decode_state, encode_state
from shrink.deepcomp.io import load_compressed, read_compressed, save_compressed, shared_tensors
from shrink.deepcomp.relindex import from_relative, to_relative
from shrink.deepcomp.sharing import SharedWeight, kmeans_1d, share_weights
from shrink.deepcomp.stage import DeepCompression, summarize

__all__ = [
    "huffman",
    "MAGIC",
    "VERSION",
    "TensorStats",
    "encode_state",
    "decode_state",
    "save_compressed",
    "read_compressed",
    "load_compressed",
    "shared_tensors",
    "to_relative",
    "from_relative",
    "SharedWeight",
    "kmeans_1d",
    "share_weights",
    "DeepCompression",
    "summarize",
]
