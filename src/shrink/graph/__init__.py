"""Tracing (torch.export) and the channel dependency graph used by structured pruning."""

from shrink.graph.build import ChannelGroup, DependencyGraph, build_dependency_graph
from shrink.graph.trace import TracedGraph, output_tensors, split_inputs, trace

__all__ = [
    "ChannelGroup",
    "DependencyGraph",
    "build_dependency_graph",
    "TracedGraph",
    "trace",
    "output_tensors",
    "split_inputs",
]
