"""Statistics: intervals over seeds (intervals), paired comparisons, Holm, IQM and probability of improvement
(comparisons), the paired t-test's power (power), the stratified bootstrap (bootstrap), aggregates over tasks
(aggregates), the rank trend (rank_trend), VTAB-1k's scores (vtab_scores), ties by the resolution of the
test set (ties), the chance rate and each seed's test against it (chance) and the comparisons' Holm families
(families).
"""
