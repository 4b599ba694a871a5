"""Ingestion-plane consumers: normalizer, chunker, embedder (one module = one consumer group)."""
