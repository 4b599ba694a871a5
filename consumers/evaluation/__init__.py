"""Evaluation-plane consumers: they read what serving published, off the answer path."""
