"""Serving-plane consumers: retrieval, rerank, generation (one module = one consumer group)."""
