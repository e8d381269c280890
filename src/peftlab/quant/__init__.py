"""quant: TODO docstring."""
