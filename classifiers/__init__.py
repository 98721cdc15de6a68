"""Classifiers that learn from the feature store (probes, heads, metrics)."""
