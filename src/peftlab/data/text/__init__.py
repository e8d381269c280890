"""Text tasks: GLUE-style splits (tasks, glue), bounded text files (files), tokenization (tokens) and
Debian's fortunes as a task and a corpus (fortunes).
"""
