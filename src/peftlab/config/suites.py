"""The benchmark suites the field reports, as data: VTAB-1k's 19 tasks and FGVC's five datasets.

A leaf module (no torch, no numpy): the data readers, config checks and the analysis all read it.

    data.name: vtab1k/<task>     <root>/<task>/{train800,val200,train800val200,test}.txt
    data.name: fgvc/<dataset>    <root>/<dataset>/{train,val,test}.json (VPT's split files)

VTAB-1k's task names and folders are those of the image-folder release that NOAH, SSF and
PETL_Vision distribute; the class counts and groups are VTAB's (Zhai et al., 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

NATURAL, SPECIALIZED, STRUCTURED = "Natural", "Specialized", "Structured"
VTAB_GROUPS = (NATURAL, SPECIALIZED, STRUCTURED)


@dataclass(frozen=True)
class Task:
    name: str  # the folder in the release
    num_classes: int
    group: str  # VTAB's group, or "FGVC"
    # the source dataset's own images are lossless (PNG or raw arrays): a JPEG copy of it has lost detail
    lossless_source: bool = False


VTAB1K_TASKS = {
    t.name: t
    for t in (
        Task("cifar", 100, NATURAL, lossless_source=True),
        Task("caltech101", 102, NATURAL),
        Task("dtd", 47, NATURAL),
        Task("oxford_flowers102", 102, NATURAL),
        Task("oxford_iiit_pet", 37, NATURAL),
        Task("svhn", 10, NATURAL, lossless_source=True),
        Task("sun397", 397, NATURAL),
        Task("patch_camelyon", 2, SPECIALIZED, lossless_source=True),
        Task("eurosat", 10, SPECIALIZED, lossless_source=True),
        Task("resisc45", 45, SPECIALIZED),
        Task("diabetic_retinopathy", 5, SPECIALIZED),
        Task("clevr_count", 8, STRUCTURED, lossless_source=True),
        Task("clevr_dist", 6, STRUCTURED, lossless_source=True),
        Task("dmlab", 6, STRUCTURED),
        Task("kitti", 4, STRUCTURED),
        Task("dsprites_loc", 16, STRUCTURED, lossless_source=True),
        Task("dsprites_ori", 16, STRUCTURED, lossless_source=True),
        Task("smallnorb_azi", 18, STRUCTURED, lossless_source=True),
        Task("smallnorb_ele", 9, STRUCTURED, lossless_source=True),
    )
}

# VTAB-1k's split files: the tuning protocol trains on train800 and selects on val200; the final
# runs train on train800val200 (all 1,000 images) and meet test once
VTAB1K_LISTS = {"train": "train800.txt", "val": "val200.txt", "trainval": "train800val200.txt", "test": "test.txt"}

FGVC_TASKS = {
    t.name: t
    for t in (
        Task("cub", 200, "FGVC"),
        Task("nabirds", 555, "FGVC"),
        Task("flowers", 102, "FGVC"),
        Task("dogs", 120, "FGVC"),
        Task("cars", 196, "FGVC"),
    )
}
# VPT's release: one json per split, {image path relative to the dataset folder: class id}
FGVC_LISTS = {"train": "train.json", "val": "val.json", "test": "test.json"}

SUITES = {"vtab1k": VTAB1K_TASKS, "fgvc": FGVC_TASKS}


def suite_task(name: str) -> tuple[str, Task] | None:
    """("vtab1k", its Task) for data.name "vtab1k/cifar"; None for a name outside the suites."""
    suite, _, task = name.partition("/")
    if suite in SUITES and task in SUITES[suite]:
        return suite, SUITES[suite][task]
    return None


def suite_dataset_names() -> tuple[str, ...]:
    return tuple(f"{suite}/{task}" for suite, tasks in SUITES.items() for task in tasks)


def vtab_group(dataset: str, declared: str | None = None) -> str | None:
    """The VTAB group of a data.name ("vtab1k/dtd" -> "Natural"); for another dataset the group its config
    declares (data.group of a filelist task), else None."""
    found = suite_task(dataset)
    if found and found[0] == "vtab1k":
        return found[1].group
    return declared if declared in VTAB_GROUPS else None
