"""Studies: a YAML file expanded into runs (spec), run idempotently in worker processes (runner,
worker). Results, statistics and the report live in ``peftlab.analysis``."""
