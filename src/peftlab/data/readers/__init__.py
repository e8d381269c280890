"""data.readers: TODO docstring."""
