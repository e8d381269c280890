"""analysis.archive: TODO docstring."""
