"""Datasets, frame readers and the benchmark json formats."""
