"""How the paper names what a study ran: a timm ViT as the field writes it (ViT-Ti/16), a dataset by its name
(Fashion-MNIST, or the display name, classes and citation a study's ``report.datasets`` gives an image folder), a
config value as prose shows it."""

from __future__ import annotations

import json
import re

import numpy as np

from peftlab.analysis.results.escape import latex_escape
from peftlab.analysis.results.record import data_names, run_data_names
from peftlab.analysis.results.units import words
from peftlab.analysis.stats.ties import tied


def integer(x) -> str:
    """4000 -> 4{,}000 (a thin-spaced thousands separator in LaTeX)."""
    return f"{int(x):,}".replace(",", "{,}")


# timm's ViTs as the field names them, with the depth and width that name means (Dosovitskiy et al.; DeiT's Ti)
VIT_FAMILIES = {"tiny": ("ViT-Ti", 12, 192), "small": ("ViT-S", 12, 384), "base": ("ViT-B", 12, 768)}
VIT_FAMILIES["large"] = ("ViT-L", 24, 1024)
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def typeset_model(name: str, study) -> str:
    """A timm ViT as the field writes it, family and the patch size the runs used (vit_tiny_patch16_224 at
    patch_size 7: ViT-Ti/7), where its depth and width are the family's, else by its depth, width and patch
    size; any other model as its identifier."""
    found = re.fullmatch(r"vit_(tiny|small|base|large)_patch(\d+)_\d+", str(name))
    if found:
        family, depth, width = VIT_FAMILIES[found.group(1)]
        patch = study.config("model.patch_size") or [int(found.group(2))]
        depths, widths = study.config("model.depth") or [depth], study.config("model.embed_dim") or [width]
        if len(patch) == 1 and depths == [depth] and widths == [width]:
            return f"{family}/{config_value(patch[0])}"
        if len(patch) == len(depths) == len(widths) == 1:  # resized: by what it is, not by a family it is not
            return (
                f"a ViT of {config_value(depths[0])} blocks of width {config_value(widths[0])} with "
                f"{config_value(patch[0])}-pixel patches"
            )
    return f"\\texttt{{{latex_escape(name)}}}"


def dataset_entry(name: str, datasets: dict | None) -> dict | None:
    """The study's ``report.datasets`` entry of a dataset as ``data_names`` names it ("hues (imagefolder)"): by its
    folder's name, its data.name or that name whole."""
    datasets = datasets or {}
    folder, _, kind = str(name).partition(" (")
    return datasets.get(folder) or datasets.get(kind.rstrip(")")) or datasets.get(str(name))


def typeset_data(name: str, datasets: dict | None = None) -> str:
    """A dataset as the field writes it: the study's display name (``report.datasets``), else a name it knows
    (fashion_mnist: Fashion-MNIST), else an image folder as "the image folder hues", else its identifier."""
    entry = dataset_entry(name, datasets)
    if entry:
        return latex_escape(entry["name"])
    if str(name) in DATASET_NAMES:
        return DATASET_NAMES[str(name)]
    folder, _, kind = str(name).partition(" (")
    if kind:
        return f"the {FOLDER_WORDS.get(kind.rstrip(')'), 'folder')} \\texttt{{{latex_escape(folder)}}}"
    return f"\\texttt{{{latex_escape(name)}}}"


FOLDER_WORDS = {"imagefolder": "image folder", "filelist": "image list", "text": "text task"}
DATA_CITATIONS = {"fashion_mnist": "xiao2017fashionmnist", "mnist": "lecun1998mnist", "vtab1k": "zhai2019vtab"}


def data_citation(name: str, datasets: dict | None = None) -> str:
    """The bibliography key of a dataset: the study's (``report.datasets``' cite), else one references.bib holds
    (a VTAB-1k task by its suite); "" for none."""
    entry = dataset_entry(name, datasets)
    if entry and entry.get("cite"):
        return entry["cite"]
    return DATA_CITATIONS.get(str(name).split("/")[0], "")


def data_text(study) -> str:
    """The datasets as the Setup paragraph says them: each by its name, with its citation and its classes (the
    study's ``report.datasets``, else as the runs recorded them) and the chance level the study states."""
    datasets, done = getattr(study, "datasets", {}), study.done
    per_run = run_data_names(done)
    texts = []
    for name in data_names(study):
        entry = dataset_entry(name, datasets) or {}
        recorded = done.loc[per_run == name, "data.num_classes"].dropna() if "data.num_classes" in done else []
        classes = entry.get("classes") or (int(recorded.iloc[0]) if len(set(recorded)) == 1 else None)
        key = data_citation(name, datasets)
        text = typeset_data(name, datasets) + (f" \\citep{{{key}}}" if key else "")
        about = [f"{classes} classes"] if classes else []
        if entry.get("chance") is not None:
            about.append(f"chance level {100 * entry['chance']:.3g}\\%")
        task = text_task(done.loc[per_run == name])
        if task:
            about.insert(0, task)
        texts.append(text + (f" ({', '.join(about)})" if about else ""))
    return words(texts)


def text_task(runs) -> str:
    """The task a text folder holds, as the runs recorded its manifest.json (provenance.data.task: ``peftlab data
    fortunes-task``, which of its categories a quote of Debian's fortunes comes from, or ``fortunes-dialogue``'s
    turns and replies); "" where they recorded none or several."""
    if "data.task" not in runs or "data.task_categories" not in runs:
        return ""
    tasks = runs[["data.task", "data.task_categories"]].dropna().drop_duplicates()
    if len(tasks) != 1 or tasks["data.task"].iloc[0] not in ("fortunes-task", "fortunes-dialogue"):
        return ""
    categories = json.loads(tasks["data.task_categories"].iloc[0])  # load.py wrote it: a list of names
    names = [latex_escape(str(name)) for name in categories]
    if names and tasks["data.task"].iloc[0] == "fortunes-dialogue":  # peftlab data fortunes-dialogue
        return (
            f"a dialogue task: the first sentence of a quote of Debian's fortunes (categories {words(names)}) as the "
            "user's turn, the rest of it as the reply"
        )
    return f"the task: which of the categories {words(names)} a quote of Debian's fortunes comes from" if names else ""


def config_value(value) -> str:
    """A config value as prose shows it: floats to 3 significant digits (a searched learning rate
    such as 0.00405360 reads 0.00405)."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:  # 4000.0 from a column with NaN
        return integer(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else integer(round(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return integer(value)
    return latex_escape(value)


def tied_with(study, variant) -> list[str]:
    """The configurations whose mean primary score ties ``variant``'s (closer than one test example,
    ``study.tie``), ``variant`` first."""
    means = study.primary["mean"]
    return [variant] + [v for v in study.variants if v != variant and tied(means[v], means[variant], study.tie)]


def order_words(study, ranked: list[str]) -> str:
    """Configurations in the order of their means, best first: "A, B and C"; where means tie (closer than one
    test example, ``study.tie``), the tied ones together and said to tie, the places apart by semicolons
    ("A; B and C, tied; D")."""
    means = study.primary["mean"]
    places: list[list[str]] = []
    for variant in ranked:
        if places and tied(means[places[-1][0]], means[variant], study.tie):
            places[-1].append(variant)
        else:
            places.append([variant])
    if all(len(place) == 1 for place in places):
        return words([study.marked(place[0]) for place in places])
    return "; ".join(words([study.marked(v) for v in place]) + (", tied" if len(place) > 1 else "") for place in places)


def count_words(count: int, noun: str) -> str:
    """1 -> "one backbone", 3 -> "three backbones"."""
    return f"{COUNTS[count] if count < len(COUNTS) else str(count)} {noun if count == 1 else noun + 's'}"


COUNTS = "zero one two three four five six seven eight nine ten eleven twelve".split()
