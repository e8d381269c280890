"""A study's tune: section, read: its searches (tune), axes (axes), the validation metric (metric), the
configuration each search is and who borrows its choice (configurations), and the points past a grid's edge (edge).
"""
