"""What every part of peftlab shares: one-line errors (errors), atomic file writes and bounded reads (files),
a run's seed (seed), locks, library warnings and logs (libraries), progress bars (progress), provenance
(versions, git state), the CPU arithmetic pinned for train.reproducible (cpu), the command's first moments
(startup) and the installed distributions' entry points (distributions). No torch at import; no
other peftlab package below it.
"""
