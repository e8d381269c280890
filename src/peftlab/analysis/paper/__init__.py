"""``peftlab paper``: the study it is about (study), its macros (macros), main.tex from the template
(build, templates/), its figures and tables (figures, tables, tuning_table) and compiling it (latex).
"""
