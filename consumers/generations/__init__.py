"""Generation consumers: the builder that replays the compacted source topic into a candidate collection."""
