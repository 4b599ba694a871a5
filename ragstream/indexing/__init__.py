"""Domain services shared by consumers and generation builds: ingest transforms, indexing, the builder."""
