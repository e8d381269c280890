"""analysis.stats: TODO docstring."""
