"""The order of a method's configurations in the study figures and the tuning table: by the values of
the config keys their ablation varies (``study_palette`` sorts by them, then by name)."""

from __future__ import annotations

import numpy as np


def varying_values(df, method_of) -> dict:
    """Each configuration's values of the ``config.*`` columns that differ among its method's
    configurations (a rank ablation's ``config.method.r``; not ``train.*``, which tuning sets), as
    sortable keys (``sortable``)."""
    if df is None or df.empty or "variant" not in df.columns:
        return {}
    # what an ablation varies (the method's keys first), not what tuning chose (train.*) or the seed
    columns = sorted(
        (c for c in df.columns if str(c).startswith("config.") and str(c).split(".")[1] not in ("train", "seed")),
        key=lambda c: (not str(c).startswith("config.method."), str(c)),
    )
    firsts = df.groupby("variant", sort=False)[columns].first() if columns else None
    values = {}
    for method in set(method_of.values()):
        mine = [v for v in method_of if method_of[v] == method and firsts is not None and v in firsts.index]
        if len(mine) < 2:
            continue
        varying = [c for c in columns if firsts.loc[mine, c].astype(str).nunique() > 1]
        for variant in mine:
            values[variant] = tuple(sortable(firsts.at[variant, c]) for c in varying)
    return values


def sortable(value) -> tuple:
    """An unset value first (the plain configuration: quant.mode none), then numbers, then text."""
    if value is None or value == "none" or (isinstance(value, float) and np.isnan(value)):
        return (0, 0.0)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (1, float(value))
    return (2, str(value))
