"""analysis.report: TODO docstring."""
