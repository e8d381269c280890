"""A study's run files read as tables (load), what its record says of it (record), what each search chose
(tuning_choices), each metric's unit, direction and display name (units) and LaTeX escaping of file strings
(escape). The lowest layer of the analysis.
"""
