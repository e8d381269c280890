"""study.tuning: TODO docstring."""
