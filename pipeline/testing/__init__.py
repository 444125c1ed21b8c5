"""Test helpers: the synthetic Landsat-like scene generator used by the demo and benchmarks."""
