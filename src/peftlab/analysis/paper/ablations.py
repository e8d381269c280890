"""The Methods paragraph's ablations: each group's axes read from all its runs, their levels, and whether the
study crossed them (a full factorial) or varied them together; the ablation table and figure read the same."""

from __future__ import annotations

import json
import math

import pandas as pd

from peftlab.analysis.results.escape import latex_escape
from peftlab.analysis.results.units import natural_key, words


def ablation_groups(runs: pd.DataFrame) -> dict[str, tuple[list[str], list[str]]]:
    """{group: (its configurations in natural order, the config keys it varies)} of each spec group beside
    "main": the keys of every member's axes (a run shared with "main" records the axes of its first group, so
    no one row holds them all), those that take two or more values among the members."""
    if "groups" not in runs or "axes" not in runs:
        return {}
    split = lambda cell: [p for p in str(cell).split(",") if p and p != "nan"]  # load.py joins them
    found = {}
    for group in dict.fromkeys(g for gs in runs["groups"] for g in split(gs) if g != "main"):
        members = runs[runs["groups"].map(lambda gs, group=group: group in split(gs))]
        variants = sorted(dict.fromkeys(members["variant"]), key=natural_key)
        keys = list(dict.fromkeys(k for cell in members["axes"] for k in split(cell)))
        varied = [k for k in keys if len({axis_level(members, v, k) for v in variants}) > 1]
        reference = None if varied else main_reference(runs, variants, keys, split)
        if reference is not None:  # one setting run alone: read against the main configuration it changes
            variants = sorted([reference, *variants], key=natural_key)
            varied = [k for k in keys if len({axis_level(runs, v, k) for v in variants}) > 1]
        if varied:
            found[group] = (variants, varied)
    return found


def main_reference(runs: pd.DataFrame, variants: list[str], keys: list[str], split) -> str | None:
    """The main configuration an ablation of one configuration changes (``dropout``: LoRA r=8 at dropout 0.1
    alone): of the main group's configurations of its method, the one whose method settings beside the ablation's
    ``keys`` equal its own most often (the first in natural order of equals); None where the main group has none."""
    main = runs[runs["groups"].map(lambda gs: "main" in split(gs))] if "config.method.name" in runs else runs[:0]
    first = runs[runs["variant"] == variants[0]].iloc[0]
    same = main[(main["config.method.name"] == first["config.method.name"]) & ~main["variant"].isin(variants)]
    settings = [c for c in runs.columns if c.startswith("config.method.") and c[len("config.") :] not in keys]
    if same.empty:
        return None
    agree = {v: sum(axis_level(runs, v, c[7:]) == axis_level(runs, variants[0], c[7:]) for c in settings)
             for v in sorted(dict.fromkeys(same["variant"]), key=natural_key)}  # fmt: skip
    return max(agree, key=agree.get)


def axis_level(runs: pd.DataFrame, variant: str, key: str) -> str:
    """A configuration's value of an axis key as its first run recorded it (config.<key>), comparable as text
    (a list of target modules is one value)."""
    column = "config." + key
    if column not in runs:
        return ""
    value = runs.loc[runs["variant"] == variant, column].iloc[0]
    return value if isinstance(value, str) else json.dumps(value, default=str) if not is_scalar_nan(value) else ""


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_scalar_nan(value) -> bool:
    return isinstance(value, float) and value != value


def ablation_design(runs: pd.DataFrame, variants: list[str], keys: list[str]) -> tuple[dict[str, list], bool]:
    """({key: its levels in order}, crossed): whether the configurations hold every combination of the levels
    (a full factorial) or only some (paired levels, or combinations left out)."""
    levels = {k: list(dict.fromkeys(axis_level(runs, v, k) for v in variants)) for k in keys}
    for key, found in levels.items():  # numbers in order; words as the configurations first take them
        if all(is_number(level_text(runs, key, x)) for x in found):
            found.sort(key=lambda x: float(level_text(runs, key, x)))
    combinations = {tuple(axis_level(runs, v, k) for k in keys) for v in variants}
    return levels, len(combinations) == math.prod(len(values) for values in levels.values())


def ablation_text(runs: pd.DataFrame, configs: dict[str, dict], names: dict[str, str]) -> str:
    """Each ablation of the method (a spec group beside "main" whose runs vary ``axes``): which configurations
    it holds, each key it varies with its levels, crossed (every combination) or not, what it sets with them
    (alpha = 2r) and whether the main configuration's value is among them."""
    text = []
    main = (
        [v for v, g in zip(runs["variant"], runs["groups"]) if "main" in str(g).split(",")] if "groups" in runs else []
    )
    for group, (variants, keys) in ablation_groups(runs).items():
        label = f"{latex_escape(group)} ablation ({words([names[v] for v in variants])})"
        levels, crossed = ablation_design(runs, variants, keys)
        shown = {k: words([level_text(runs, k, x) for x in levels[k]]) for k in keys}
        if len(keys) == 1:
            varied = f"{label} varies {axis_words(keys[0])} over {shown[keys[0]]}"
        elif crossed:
            each = [f"{axis_words(k)} over {shown[k]}" for k in keys]
            crossing = f"{each[0]} with {each[1]}" if len(each) == 2 else "; ".join(each[:-1]) + "; and " + each[-1]
            varied = f"{label} crosses {crossing}, a full factorial of {len(variants)} configurations"
        else:
            pairs = ["(" + ", ".join(level_text(runs, k, axis_level(runs, v, k)) for k in keys) + ")" for v in variants]
            varied = (
                f"{label} varies {words([axis_words(k) for k in keys])} together, not crossed: "
                f"({', '.join(axis_symbol(k) for k in keys)}) = {words(pairs)}"
            )
        method_keys = [k.removeprefix("method.") for k in keys if k.startswith("method.")]
        if method_keys and all(v in configs for v in variants):
            varied += along(method_keys[0], [configs[v] for v in variants], skip=set(method_keys))
        own = [tuple(axis_level(runs, v, k) for k in keys) for v in dict.fromkeys(main) if v in configs]
        combos = {tuple(axis_level(runs, v, k) for k in keys) for v in variants}
        if len(own) == 1 and all(own[0]) and own[0] not in combos:
            values = ", ".join(f"{axis_symbol(k)} = {level_text(runs, k, x)}" for k, x in zip(keys, own[0]))
            varied += f"; it leaves out {values}, the main configuration's ({names[main[0]]})"
        text.append(varied)
    return "".join(f"The {t}. " for t in text)


def level_text(runs: pd.DataFrame, key: str, level: str) -> str:
    """An axis level as prose shows it (format_value of the recorded value)."""
    try:
        value = json.loads(level)
    except (TypeError, ValueError):
        value = level
    return format_value(value)


AXIS_WORDS = {"r": "the rank $r$", "lora_alpha": "$\\alpha$", "target_modules": "the adapted modules"}


def axis_symbol(key: str) -> str:
    """An option's symbol in a formula: $r$, $\\alpha$, else its config key (``method.r`` or ``r``)."""
    short = key.removeprefix("method.")
    return {"r": "$r$", "lora_alpha": "$\\alpha$"}.get(short) or f"\\texttt{{{latex_escape(key)}}}"


def axis_words(key: str) -> str:
    """What an axis key varies in prose ("the rank $r$"), a method option by its short name or ``method.<key>``,
    any other config key as it is."""
    short = key.removeprefix("method.")
    if short in AXIS_WORDS and (key == short or key.startswith("method.")):
        return AXIS_WORDS[short]
    return f"\\texttt{{{latex_escape(key if '.' in key else 'method.' + key)}}}"


def format_value(value) -> str:
    """A config value as prose shows it: 16.0 as 16, other floats to 3 significant digits, text escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value.is_integer() else f"{value:.3g}"
    return latex_escape(str(value))


def along(key: str, configs: list[dict], skip: set[str] = frozenset()) -> str:
    """What an ablation sets with the key it varies: " and sets $\\alpha$ = 2r with it" where another option
    changes in proportion to it, else that option's values; "" where none changes."""
    text = []
    for other in dict.fromkeys(k for c in configs for k in c):
        if other == key or other in skip:
            continue
        values = [c.get(other) for c in configs]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) == 1:
            continue
        base = [c.get(key) for c in configs]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x for x in base + values)
        ratios = {round(v / b, 9) for v, b in zip(values, base)} if numeric else set()
        if len(ratios) == 1:
            ratio = format_value(float(ratios.pop()))
            symbol = axis_symbol(key).strip("$")
            text.append(f"{axis_symbol(other).rstrip('$')} = {'' if ratio == '1' else ratio}{symbol}$")
        else:
            text.append(f"{axis_words(other)} to {words([format_value(v) for v in values])}")
    return f" and sets {words(text)} with it" if text else ""
