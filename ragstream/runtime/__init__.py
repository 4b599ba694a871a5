"""Consumer/producer wiring shared by every worker: Kafka admin, DLQ, retries, offsets, telemetry."""
