"""data.text: TODO docstring."""
