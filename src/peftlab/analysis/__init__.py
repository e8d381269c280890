"""Analysis of a study's results table: statistics (intervals, comparisons, aggregates over tasks, the
stratified bootstrap), tables, figures and the report (pandas, scipy and matplotlib only; never torch).
Each module is imported by its own name: this package imports nothing."""
