"""The figures of a report and a paper, drawn with matplotlib's Agg canvas: their style (style), the study's
figures (study), the ablation figure (ablation), training health (health) and VTAB-1k (vtab).
"""
