"""Benchmarks: ratios measured in one run; each script prints one JSON object as its last line."""
