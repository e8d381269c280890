"""Analysis of a study's run files (pandas, scipy and matplotlib only; never torch), in layers, each importing
only those above it in this list: results (run files read as tables, units, names), stats (intervals,
comparisons, power, bootstrap, aggregates), figures, report (``peftlab report``: its sections), paper
(``peftlab paper``: macros, LaTeX, its figures and tables) and archive (``peftlab submission``).
Each module is imported by its own name: this package imports nothing."""
