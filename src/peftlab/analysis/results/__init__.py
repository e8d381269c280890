"""A study's run files read as tables (load), what its record says of it (record), what each search chose
(tuning_choices), each metric's unit, direction and display name (units), LaTeX escaping of file strings
(escape), and whether a study's means are its study file's header's (reproduced: make study's last line).
The lowest layer of the analysis.
"""
