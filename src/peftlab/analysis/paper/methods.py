"""The paper's Methods paragraph, written from each configuration's resolved config as its runs recorded it.

Per method the study ran (in the order of its configurations): what the method is, with its citation
(``METHOD_PROSE``), said once; then each configuration by its label with its own hyper-parameters ("LoRA has rank
4 and $\\alpha$ = 8 on the attention's q and v projections of every block, $A$ Kaiming-uniform and $B$ zero"),
what all its configurations share said once; then each ablation of it, by what it varies and what it sets with
it ("sets $\\alpha$ = 2r with it"). A plugin's method is said in the sentences its config gives
(``MethodConfig.describe``, result.json's provenance.plugin.description), cited by its own BibTeX entry, or
where it gives none, by its label and the options each configuration set.
"""

from __future__ import annotations

import dataclasses
import re

import pandas as pd

from peftlab.analysis.paper.ablations import ablation_text, format_value
from peftlab.analysis.paper.method_words import LM_WHAT, QUANT_WHAT, WHAT
from peftlab.analysis.results.escape import latex_escape, latex_text
from peftlab.analysis.results.tuning_choices import borrowed_configurations
from peftlab.analysis.results.units import bridge_names, display_name, words
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.config.methods import METHODS
from peftlab.config.tex import BibEntry, bibtex_entry

QUANT = ("int8", "nf4", "fp4")
# the regular expressions of the target presets (tuners/targets.py) and what they adapt, as prose says it
TARGET_WORDS = {
    r"blocks\.\d+\.attn\.qkv\.(q|v)": "the attention's q and v projections",
    r"blocks\.\d+\.attn\.qkv\.(q|k|v)": "the attention's q, k and v projections",
    r"blocks\.\d+\.attn\.qkv\.(k|v)": "the attention's k and v projections",
    r"blocks\.\d+\.attn\.proj": "the attention's output projection",
    r"blocks\.\d+\.mlp\.(fc1|fc2)": "both Linears of the MLP",
    r"blocks\.\d+\.mlp\.fc2": "the MLP's second Linear",
    r"blocks\.\d+\.mlp\.fc1": "the MLP's first Linear",
}
# the options prose names, method option -> words for its value (v); the others are named as config keys
OPTION_WORDS = {
    "r": "rank {v}",
    "lora_alpha": "$\\alpha$ = {v}",
    "alpha": "$\\alpha$ = {v}",
    "lora_dropout": "dropout {v}",
    "init_r": "initial rank {v}",
    "target_r": "a mean rank of {v} after pruning",
    "max_rank": "ranks up to {v}",
    "importance": "{v} importance",
    "allocation": "{v} allocation",
    "format": "an {v} base",
    "group_size": "groups of {v}",
    "bottleneck": "bottleneck width {v}",
    "dim": "hidden width {v}",
    "groups": "{v} groups",
    "scale": "scale {v}",
    "prompt_tokens": "{v} prompt tokens",
    "num_virtual_tokens": "{v} virtual tokens",
    "oft_block_size": "blocks of {v}",
    "boft_block_size": "blocks of {v}",
    "rank_strategy": "ranks spread by the {v} strategy",
}
SILENT = {"name", "target_modules", "init", "peft_type", "options"}  # said otherwise, or not an option


def define_methods(numbers, study) -> None:
    """``methodsText``: the paragraph's sentences, whose numbers are the configurations' recorded options."""
    numbers.add(
        "methodsText",
        method_sentences(study.df, causal=study.modality == "causal-lm", labels=study.labels),
        "each configuration's method and options as its runs recorded them (config.method.*, config.quant.mode, "
        "provenance.plugin.description; paper/methods.py)",
    )


def method_sentences(df: pd.DataFrame, causal: bool = False, labels: dict | None = None) -> str:
    """The Methods paragraph's sentences on the configurations the study's completed runs ran (``causal``: a
    study of causal LMs, whose head no method but full fine-tuning trains; ``labels``: report.labels)."""
    done = completed_runs(df)
    if "variant" not in done:  # a table of methods alone: each its own configuration
        done = done.assign(variant=done["method"])
    text = []
    for method in dict.fromkeys(done["method"]):
        runs = done[done["method"] == method]
        if method == "peft":
            continue
        text.append(method_text(method, runs, causal, labels or {}))
    quant = done.get("config.quant.mode")
    if quant is not None and quant.isin(QUANT).any():
        text.append(QUANT_WHAT)
    types = bridge_names(done, labels)
    if types:  # method.name: peft, one configuration per PEFT type
        text.append(
            f"{words([latex_text(t) for t in types])} ran through PEFT's own implementation of each type "
            "(\\texttt{method.name: peft}), on the linear layers its configuration targets, at PEFT's defaults "
            "but for the options the study file sets \\citep{mangrulkar2022peft}. "
        )
    if not causal and len(done) and not set(done["method"]) <= {"full", "linear"}:
        text.append("Every method trains the classifier head too. ")
    return "".join(text)


def method_text(method: str, runs: pd.DataFrame, causal: bool, labels: dict) -> str:
    """What ``method`` is, then each of its configurations with its own options, then its ablations."""
    cls = METHODS.get(method)
    known = {f.name for f in dataclasses.fields(cls)} if cls is not None else None  # its own options only
    configs = {v: options(runs[runs["variant"] == v].iloc[0], known) for v in dict.fromkeys(runs["variant"])}
    labelled = {v for v in configs if v in labels or method in labels}  # the tables name it otherwise than here
    borrowed = borrowed_configurations(runs)  # at another's tuned values (tune.share): marked as in the tables
    names = {
        v: latex_text(display_name(v, method, labels)) + (r"$^{\ddagger}$" if v in borrowed else "") for v in configs
    }
    what = (LM_WHAT if causal else {}).get(method) or WHAT.get(method)
    if what is None:  # a plugin's method: the sentences its config gives, else its label and options
        return plugin_text(method, runs, configs, names)
    if method == "adalora":
        what += pruning_text(runs)
    if method in ADAPTIVE:
        what += built_text(runs, method, labels)
    parts = {v: config_phrases(method, c) for v, c in configs.items()}
    first = next(iter(configs))
    text = what
    if len(configs) == 1:
        values, where = parts[first]
        if first in labelled and not names_it(what, names[first]):
            text = what.rstrip()[:-1] + f" ({names[first]} in the tables). "
        if values and where:
            text += f"Here it has {words(values)} and {where_text(where)}. "
        elif values or where:
            text += f"Here it has {words(values)}. " if values else f"Here it {where_text(where)}. "
        return text
    shared = [w for w in parts[first][1] if all(w in where for _, where in parts.values())]
    each = option_groups(method, configs, names)
    placed: dict[tuple[str, ...], list[str]] = {}  # the configurations applied alike, said together
    for v, (_, where) in parts.items():
        if any(w not in shared for w in where):
            placed.setdefault(tuple(w for w in where if w not in shared), []).append(names[v])
    own = [f"{words(n)} {where_text(list(w), plural=len(n) > 1)}" for w, n in placed.items()]
    if shared:
        text += f"All its configurations {where_text(shared, plural=True)}" + ("; " if each else ". ")
    if each:
        text += ("they have " if shared else "Its configurations have ") + words(each) + ". "
    if own:
        text += "; ".join(own) + ". "
    return text + ablation_text(runs, configs, names)


ADAPTIVE = ("adalora", "adaptive")  # the methods that prune ranks: their trainable count changes as they train


def built_text(runs: pd.DataFrame, method: str, labels: dict) -> str:
    """Each configuration's trainable parameters as built and as kept at the end of training (params.initial and
    params of result.json, means over its seeds): "" where no run recorded the count it was built with."""
    if "params.initial.trainable" not in runs or runs["params.initial.trainable"].isna().all():
        return ""
    said = []
    for variant in dict.fromkeys(runs["variant"]):
        rows = runs[runs["variant"] == variant]
        built, kept = rows["params.initial.trainable"].mean(), rows["params.trainable"].mean()
        if pd.notna(built) and pd.notna(kept):
            name = latex_text(display_name(variant, method, labels))
            said.append(
                f"{name} is built with {integer_text(built)} trainable parameters and keeps {integer_text(kept)}"
            )
    if not said:
        return ""
    return "; ".join(said) + " at the end of training (means over the seeds, the head included). "


def integer_text(x: float) -> str:
    """A count as prose prints it, thousands thin-spaced: 34{,}058."""
    return f"{round(x):,}".replace(",", "{,}")


def option_groups(method: str, configs: dict[str, dict], names: dict[str, str]) -> list[str]:
    """A method's options across its configurations, each said once: one every configuration shares as it is
    ("$\\alpha$ = 16"); one they differ in by its values and the configurations of each ("rank 4 (lora r=4 and
    lora r=4 targets=all-linear) or rank 8 (lora r=8 and ...)"), or where no two configurations share a value of
    any option they differ in, each configuration with its own values of those options ("rank 2 and $\\alpha$ = 4
    (lora r=2)"); a configuration without an option is left out of its phrase."""
    phrases = {v: dict(config_values(method, c)) for v, c in configs.items()}
    keys = list(dict.fromkeys(k for found in phrases.values() for k in found))
    shared, differing = [], {}
    for key in keys:
        by_phrase: dict[str, list[str]] = {}
        for v, found in phrases.items():
            if key in found:
                by_phrase.setdefault(found[key], []).append(v)
        if len(by_phrase) == 1 and sum(map(len, by_phrase.values())) == len(configs):
            shared.append(next(iter(by_phrase)))
        else:
            differing[key] = by_phrase
    if differing and all(len(held) == 1 for by_phrase in differing.values() for held in by_phrase.values()):
        own = [
            f"{words([phrases[v][k] for k in differing if k in phrases[v]])} ({names[v]})"
            for v in configs
            if any(k in phrases[v] for k in differing)
        ]
        return [" or ".join(own)] + shared
    grouped = {
        key: " or ".join(f"{phrase} ({words([names[v] for v in held])})" for phrase, held in by_phrase.items())
        for key, by_phrase in differing.items()
    }
    return [grouped.get(key) or shared.pop(0) for key in keys]  # in the options' order: rank first


def pruning_text(runs: pd.DataFrame) -> str:
    """AdaLoRA's schedule as its runs recorded it (result.json's ranks.schedule, in optimizer steps) and what its
    trainable count is: the count after pruning, at the end of training."""
    counted = (
        "The trainable parameters the tables give for AdaLoRA are counted after this pruning, at the end of training. "
    )
    steps = [
        runs.get(f"ranks.schedule.{key}", pd.Series(dtype=float)).dropna() for key in ("tinit", "tfinal", "total_step")
    ]
    if any(s.empty or s.nunique() != 1 for s in steps):
        return counted
    tinit, tfinal, total = (int(s.iloc[0]) for s in steps)
    return (
        f"Its budget stays at the initial rank for the first {tinit} of its {total} optimizer steps ($t_i$), falls "
        f"to the final budget over the steps after and is held there for the last {tfinal} ($t_f$). " + counted
    )


def where_text(phrases: list[str], plural: bool = False) -> str:
    """Where a configuration is applied and how it starts (``config_phrases``' second part) as a verb phrase:
    "is applied on the attention's q and v projections of every block, with $A$ starting Kaiming-uniform and $B$
    at zero", or without a place "has $A$ starting ..."; ``plural``: of several configurations ("are", "have")."""
    place = [p for p in phrases if not p.startswith("$A$")]
    start = [p for p in phrases if p.startswith("$A$")]
    if place:
        return f"{'are' if plural else 'is'} applied {', '.join(place)}" + (f", with {words(start)}" if start else "")
    return f"{'have' if plural else 'has'} {words(start)}"


def names_it(text: str, label: str) -> bool:
    """Whether ``text`` names ``label`` as a word of its own ("Last" is not named by "Last-blocks tuning")."""
    return re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", text) is not None


def options(row: pd.Series, known: set[str] | None = None) -> dict:
    """A run's method options and base quantization, from its recorded config (config.method.*; ``known``: the
    method's own fields, where its config class is known)."""
    found = {
        key.removeprefix("config.method."): value
        for key, value in row.items()
        if key.startswith("config.method.") and not _missing(value)
    }
    if known is not None:
        found = {k: v for k, v in found.items() if k.split(".")[0] in known}
    mode = row.get("config.quant.mode")
    if isinstance(mode, str) and mode in QUANT:
        found["quant"] = mode
    return found


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def config_phrases(method: str, config: dict) -> tuple[list[str], list[str]]:
    """A configuration's hyper-parameters as prose: (its values, rank first, as "rank 4", "$\\alpha$ = 8"; where
    it is applied and how it starts, as "on the attention's q and v projections of every block", "$A$
    Kaiming-uniform and $B$ zero", "on a base stored in 4-bit NF4")."""
    cls = METHODS.get(method)
    values = [phrase for _, phrase in config_values(method, config)]
    where = []
    if method == "vpt" and "deep" in config:
        where.append("before every block (deep)" if config["deep"] else "at the input only (shallow)")
    if "target_modules" in config and cls is not None and hasattr(cls, "presets"):
        where.append("on " + target_words(config["target_modules"], cls.presets) + " of every block")
    if method in ("lora", "dora", "adaptive") and config.get("init") in ("default", "gaussian"):
        start = "Kaiming-uniform" if config["init"] == "default" else "Gaussian"
        where.append(f"$A$ starting {start} and $B$ at zero")
    if "quant" in config:
        where.append(f"on a base stored in {QUANT_WORDS[config['quant']]}")
    return values, where


def config_values(method: str, config: dict) -> list[tuple[str, str]]:
    """A configuration's hyper-parameters as (option, prose) pairs, rank first: ("r", "rank 4"), ("lora_alpha",
    "$\\alpha$ = 8"); an option prose has no words for is named only where it is not at its default."""
    cls = METHODS.get(method)
    defaults = cls() if cls is not None else None
    values = []
    for key, value in config.items():
        if key in SILENT or key == "quant" or key.startswith(("rank_pattern", "alpha_pattern")):
            continue
        if (key == "lora_dropout" and not value) or (key == "rank_strategy" and value == "uniform"):
            continue
        default = getattr(defaults, key, None)
        if key not in OPTION_WORDS and (defaults is None or value == default or str(value) == str(default)):
            continue  # an option prose has no words for, at its default: nothing to say
        values.append((key, option_phrase(key, value)))
    order = list(OPTION_WORDS)
    return sorted(values, key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)


QUANT_WORDS = {
    "int8": "8-bit \\citep{dettmers2022llmint8}",
    "nf4": "4-bit NF4 \\citep{dettmers2023qlora}",
    "fp4": "4-bit FP4 \\citep{dettmers2023qlora}",
}


def option_phrase(key: str, value) -> str:
    """One option as prose: OPTION_WORDS' words for it, else ``method.key`` = value."""
    shown = format_value(value)
    if key in OPTION_WORDS and key != "deep":
        return OPTION_WORDS[key].format(v=shown)
    return f"\\texttt{{{latex_escape('method.' + key)}}} = {shown}"


def target_words(targets: str, presets: dict[str, list[str]]) -> str:
    """The modules a target preset or list adapts, as prose ("the attention's q and v projections"), a pattern
    prose has no words for as its expression."""
    patterns = presets.get(targets) or str(targets).split("/")
    return words([TARGET_WORDS.get(p) or f"\\texttt{{{latex_escape(p)}}}" for p in patterns])


def plugin_text(method: str, runs: pd.DataFrame, configs: dict[str, dict], names: dict[str, str]) -> str:
    """A plugin's method: the sentences its config gives each configuration (provenance.plugin.description),
    cited by its BibTeX entry; where it gives none, its label, its plugin and the options each configuration
    set."""
    plugin = runs.get("provenance.plugin", pd.Series(dtype=object)).dropna()
    origin = f" (plugin {latex_escape(str(plugin.iloc[0]).split(' (')[0])})" if len(plugin) else ""
    cited = plugin_citation(runs)
    key = cited.key if cited else None
    sentences = []
    for variant in configs:
        said = runs.loc[runs["variant"] == variant].get("provenance.plugin_description", pd.Series(dtype=object))
        said = said.dropna()
        if len(said):
            text = latex_text(str(said.iloc[0])).rstrip()
            text = (text[:-1] if text.endswith(".") else text) + (f" \\citep{{{key}}}." if key else ".")
            label = names[variant]
            if not names_it(text, label):  # the name the tables give it
                text = f"{label}: {text}" if len(configs) > 1 else f"{text[:-1]} ({label} in the tables)."
            sentences.append(text)
        else:
            set_here = [option_phrase(k, v) for k, v in configs[variant].items() if k not in SILENT]
            sentences.append(
                f"{names[variant]} is the method \\texttt{{{latex_escape(method)}}}{origin}"
                + (f", with {words(set_here)}." if set_here else ".")
            )
    return " ".join(dict.fromkeys(sentences)) + " "


def plugin_citation(runs: pd.DataFrame) -> BibEntry | None:
    """The BibTeX entry a plugin's runs recorded (provenance.plugin_bibtex), None where none did."""
    entries = runs.get("provenance.plugin_bibtex", pd.Series(dtype=object)).dropna()
    if not len(entries):
        return None
    return recorded_bibtex(entries.iloc[0], runs.loc[entries.index[0], "run_id"])


def recorded_bibtex(entry, run_id) -> BibEntry:
    """A plugin's BibTeX entry as a run recorded it, read again: a received result.json may hold any text."""
    return bibtex_entry(entry, f"runs/{run_id}/result.json provenance.plugin.bibtex")


def plugin_bibtex(df: pd.DataFrame, bib: str) -> str:
    """The plugins' BibTeX entries the runs recorded whose keys ``bib`` lacks, to append to references.bib, each
    under a comment saying which plugin supplied it and that peftlab did not check it (peftlab's own entries
    were checked against a public source)."""
    done = completed_runs(df)
    if "provenance.plugin_bibtex" not in done:
        return ""
    have = set(re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", bib))
    entries = []
    recorded = done["provenance.plugin_bibtex"].dropna()
    plugins = done.get("provenance.plugin", pd.Series(index=done.index, dtype=object))
    for index in recorded.drop_duplicates().index:
        entry = recorded_bibtex(recorded[index], done.loc[index, "run_id"])
        if entry.key not in have:
            have.add(entry.key)
            plugin = plugins.get(index)
            source = str(plugin).split(" (")[0] if isinstance(plugin, str) and plugin else "a plugin"
            # BibTeX skips text outside an entry: a line a reader of references.bib sees, and no field
            note = f"% Supplied by the plugin {one_line(source)} (its runs' result.json): not checked by peftlab"
            entries.append(f"{note}\n{entry.text}")
    return "".join(f"\n{entry}\n" for entry in entries)


def one_line(text: str) -> str:
    """A recorded name for a comment line of references.bib: no newline or "@" (which would start an entry)."""
    return "".join(char if char.isprintable() and char not in "@%" else "?" for char in text)
