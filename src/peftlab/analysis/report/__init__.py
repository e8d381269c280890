"""``peftlab report``: report.md and its LaTeX tables (build), each section in a module of its own (primary,
significance, tuning, health, adaptive, across_datasets, equal_bits, claims, vtab, literature, per_class,
protocol_card with the header's phases), its tables (tables) and figures section (figures).
"""
