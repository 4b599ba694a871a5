"""Index generations: immutable build records, a durable registry, alias-based promotion, builds, canary, backup."""
