"""Index generations: immutable records, a durable registry, alias promotion, builds, canary, backup."""
