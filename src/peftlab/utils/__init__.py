"""What every part of peftlab shares: one-line errors (errors), atomic file writes and bounded reads (files),
a run's seed (seed), locks, library warnings and logs (libraries), progress bars (progress), provenance
(versions, git state), the CPU arithmetic pinned for train.reproducible (cpu), the command's first moments
(startup), the installed distributions' entry points (distributions) and a JSON file checked against the
TypedDict its writer uses (typed_json). No torch at import; no
other peftlab package below it.
"""
