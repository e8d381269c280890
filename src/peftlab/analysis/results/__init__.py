"""analysis.results: TODO docstring."""
