"""The application layer: the CLI, the composition root and the local stack, on top of every plane."""
