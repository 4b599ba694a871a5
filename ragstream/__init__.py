"""ragstream."""
