"""analysis.figures: TODO docstring."""
