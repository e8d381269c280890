"""utils: TODO docstring."""
