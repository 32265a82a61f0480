"""Side-by-side benchmarks of shrink and its peers; `make bench` writes docs/benchmarks.md."""
