"""Studies: a YAML file expanded into runs (spec, keys, exclusions, report_options), checked before any run
(preflight, estimate, stale), its searches run and journaled (search, trials, journal, pruning; side_by_side shares
the workers among them; the tune: section is read in ``tuning/``) and its runs executed idempotently (runner, with
the executors in ``executors/``; phases records each phase's times). ``records`` holds the schemas of the files a
study writes in its folder that the report and the paper read back (spec.json, selection.json, command.json).
Results, statistics and the report live in ``peftlab.analysis``."""
