"""analysis.paper: TODO docstring."""
