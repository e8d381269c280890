"""study.executors: TODO docstring."""
