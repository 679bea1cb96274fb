"""Benchmarks: each ``bench_*`` module prints its figures as ratios against peers measured in the same run."""
