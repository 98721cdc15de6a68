"""Learners: estimators and the arithmetic around them (arrays in, arrays out; never the store)."""
