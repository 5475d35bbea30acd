"""Benchmarks behind `recsys bench`: each measures the project against a reference in the same run."""
