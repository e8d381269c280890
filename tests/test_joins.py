"""The joins from a study file to an exported model, crossed (issue 48, item 7): backbone family x data
layout x protocol x data.cache x method x export. Every pair of axis values that can meet is covered by
an all-pairs design (``all_pairs``, written here); ``PEFTLAB_JOINS=full`` (``make test-joins-full``) runs
the whole product instead. Combinations that cannot meet are left out by design (``incompatible``, the
same reasons as docs/testing.md's "The join matrix").

Each case trains one run of a study through ``peftlab train`` (or sees it refused in one line), then:

- its export, loaded by code that does not trust peftlab's numbers: the merged export into plain timm
  built from the header's arguments (transformers' ``from_pretrained`` for an HF model) and fed test
  images made by the header's preprocessing record (``testkit.header_images``), or texts tokenized by
  the model's own tokenizer; the PEFT export through PEFT's ``from_pretrained`` on the plain base. Its
  test accuracy equals result.json's;
- the study's report (the run is the study's run: ``peftlab study`` finds it finished): its main table's
  test top-1 equals results.csv's, recomputed with pandas. The first case of each family, data layout and
  method draws its report's figures; the others build them and write their files empty (``drawing_cases``).
"""

import csv
import itertools
import json
import os
import re
import sys

import pandas as pd
import pytest
import torch
import yaml
from testkit import (
    REPO,
    TINY_MODEL,
    assert_one_line_refusal,
    cli_in_process,
    header_accuracy,
    hf_text_dir,
    hf_vision_model,
    write_figures_empty,
    write_text_task,
)

sys.path.insert(0, str(REPO / "tests" / "data"))
from datafiles import write_image_folder
from suitefiles import write_fgvc, write_vtab1k

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("quick_figures")]  # reads reports' text, not pixels

IMAGE, TEXT = "image", "text"
FAMILIES = {
    "vit": (IMAGE, TINY_MODEL),
    "swin": (IMAGE, {"name": "swin_tiny_patch4_window7_224", "embed_dim": 24, "img_size": 32}),
    "eva02": (IMAGE, {"name": "eva02_base_patch14_224", "depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 28}),
    "hf-vit": (IMAGE, None),  # testkit.hf_vision_model("vit") saved: model.source hf
    "gpt2": (TEXT, None),  # testkit.hf_text_dir(..., "gpt2"): model.source hf-text
}
DATA = {"imagefolder": IMAGE, "vtab1k": IMAGE, "fgvc": IMAGE, "text-csv": TEXT, "glue": TEXT}
AXES = {
    "family": list(FAMILIES),
    "data": list(DATA),
    "protocol": ["none", "petl_vision", "vpetl_bench"],
    "cache": [True, False],
    "method": ["lora", "bitfit", "prompt_tuning"],
    "export": ["merged", "peft"],
}
# expected one-line refusals: (method, export) -> words of the line (docs/testing.md lists them)
REFUSED = {
    ("prompt_tuning", "merged"): ("virtual tokens fold into no weight", "--peft"),
    ("bitfit", "peft"): ("PEFT cannot load",),
}


def incompatible(case: dict) -> str | None:
    """Why a (possibly partial) combination cannot be a run, or None; the reasons docs/testing.md lists."""
    family, data, protocol, method = (case.get(k) for k in ("family", "data", "protocol", "method"))
    if family and data and FAMILIES[family][0] != DATA[data]:
        return "an image model does not read text, nor a text model images"
    if family and protocol not in (None, "none") and FAMILIES[family][0] == TEXT:
        return "the protocol presets are VTAB-1k's image protocols (resolution, interpolation, normalization)"
    if data and protocol not in (None, "none") and DATA[data] == TEXT:
        return "the protocol presets are VTAB-1k's image protocols (resolution, interpolation, normalization)"
    if method == "prompt_tuning" and ((family and FAMILIES[family][0] == IMAGE) or (data and DATA[data] == IMAGE)):
        return "prompt tuning is PEFT's, for HF text models (virtual tokens before the text)"
    return None


def all_pairs(axes: dict[str, list]) -> list[dict]:
    """Few combinations covering every pair of values of two axes that some compatible combination holds:
    greedy, each step the compatible combination covering the most pairs not yet covered (the first such
    in product order: the design is the same on every run)."""
    names = list(axes)
    product = [dict(zip(names, values)) for values in itertools.product(*axes.values())]
    product = [case for case in product if incompatible(case) is None]

    def pairs(case: dict) -> set:
        return {((a, repr(case[a])), (b, repr(case[b]))) for a, b in itertools.combinations(names, 2)}

    needed = set().union(*(pairs(case) for case in product))
    chosen = []
    while needed:
        best = max(product, key=lambda case: len(pairs(case) & needed))
        chosen.append(best)
        needed -= pairs(best)
    return chosen


def case_id(case: dict) -> str:
    return "-".join(f"{case[k]}" if k != "cache" else ("cache" if case[k] else "nocache") for k in AXES)


CASES = (
    [dict(zip(AXES, v)) for v in itertools.product(*AXES.values()) if incompatible(dict(zip(AXES, v))) is None]
    if os.environ.get("PEFTLAB_JOINS") == "full"
    else all_pairs(AXES)
)


def drawing_cases(cases: list[dict]) -> list[dict]:
    """The cases whose reports draw their figures: the first case of each family, data layout and method (what
    a study's figures are drawn from: the model's layers, the classes, the method's monitors). The others' reports
    build the same figures and write them as empty files (``testkit.write_figures_empty``): this module reads
    reports' text, never a figure's pixels, and matplotlib's layout and drawing are a third of a case's cost."""
    drawn, seen = [], set()
    for case in cases:
        values = {(axis, case[axis]) for axis in ("family", "data", "method")}
        if not values <= seen:
            drawn.append(case)
            seen |= values
    return drawn


DRAWN = drawing_cases(CASES)


def test_the_design_covers_every_pair_that_can_meet():
    full = [dict(zip(AXES, v)) for v in itertools.product(*AXES.values())]
    compatible = [case for case in full if incompatible(case) is None]
    design = all_pairs(AXES)
    for a, b in itertools.combinations(AXES, 2):
        for va, vb in itertools.product(AXES[a], AXES[b]):
            meets = any(c[a] == va and c[b] == vb for c in compatible)
            covered = any(c[a] == va and c[b] == vb for c in design)
            assert meets == covered, (a, va, b, vb)
    assert len(design) <= 25 and all(incompatible(c) is None for c in design)
    for axis in ("family", "data", "method"):  # every value's report figures drawn in some case
        assert {c[axis] for c in drawing_cases(CASES)} == {c[axis] for c in CASES}, axis


# ------------------------------------------------------------------ data and models, written once


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Each data layout and HF model directory, written once: name -> (root, test items)."""
    root = tmp_path_factory.mktemp("joins")
    torch.manual_seed(0)
    made = {}
    write_image_folder(root / "folder", split=True)
    classes = sorted(p.name for p in (root / "folder" / "test").iterdir())
    made["imagefolder"] = (
        root / "folder",
        [(p, classes.index(p.parent.name)) for p in sorted((root / "folder" / "test").glob("*/*.png"))],
    )
    vtab = write_vtab1k(root / "vtab", ["eurosat"])["eurosat"]
    made["vtab1k"] = (root / "vtab", [(vtab.image_dir / p, label) for p, label in vtab.splits["test"]])
    fgvc = write_fgvc(root / "fgvc", ["flowers"])["flowers"]
    made["fgvc"] = (root / "fgvc", [(fgvc.image_dir / p, label) for p, label in fgvc.splits["test"]])
    task = write_text_task(root / "text-jsonl", train=36, test=18)
    (root / "text-csv").mkdir()
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (task / f"{split}.jsonl").read_text().splitlines()]
        with open(root / "text-csv" / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
        if split == "test":
            made["text-csv"] = (root / "text-csv", [(r["text"], r["label"]) for r in rows])
    two = write_text_task(root / "glue-jsonl", train=36, test=18, num_classes=2, seed=1)
    (root / "glue" / "SST-2").mkdir(parents=True)
    for split, name in (("train", "train"), ("test", "dev")):
        rows = [json.loads(line) for line in (two / f"{split}.jsonl").read_text().splitlines()]
        lines = ["sentence\tlabel"] + [f"{r['text']}\t{r['label']}" for r in rows]
        (root / "glue" / "SST-2" / f"{name}.tsv").write_text("\n".join(lines) + "\n")
        if split == "test":
            made["glue"] = (root / "glue", [(r["text"], r["label"]) for r in rows])
    hf_vision_model("vit", num_classes=10).save_pretrained(root / "hf-vit")
    made["hf-vit"] = (root / "hf-vit", None)
    made["gpt2"] = (hf_text_dir(root / "gpt2", "gpt2"), None)
    return made


def run_config(case: dict, files) -> dict:
    family, data = case["family"], case["data"]
    model = FAMILIES[family][1]
    if family == "hf-vit":
        model = {"source": "hf", "path": str(files["hf-vit"][0])}
    elif family == "gpt2":
        model = {"source": "hf-text", "path": str(files["gpt2"][0])}
    elif family == "eva02":
        model = {**model, "patch_size": 14}
    name = {"imagefolder": "imagefolder", "vtab1k": "vtab1k/eurosat", "fgvc": "fgvc/flowers", "text-csv": "text"}
    data_cfg = {"name": name.get(data, "glue/sst2"), "root": str(files[data][0]), "cache": case["cache"]}
    if data == "vtab1k":
        data_cfg["trainval"] = True  # the final runs' train800val200: no validation split
    if DATA[data] == TEXT:
        data_cfg["max_length"] = 16
    method = {"lora": {"name": "lora", "r": 2}, "bitfit": {"name": "bitfit"}}.get(
        case["method"], {"name": "prompt_tuning", "num_virtual_tokens": 2}
    )
    train = {"max_steps": 3, "lr": 1e-2, "eval_batch_size": 64}
    if case["protocol"] == "none":
        train["batch_size"] = 16  # a preset fixes its own (64)
    config = {"name": "joins", "model": model, "method": method, "data": data_cfg, "train": train}
    if case["protocol"] != "none":
        config["protocol"] = case["protocol"]
    return config


# ------------------------------------------------------------------ the oracles (no peftlab numbers)


def text_accuracy(model, tokenizer_dir, items, max_length: int, batch_size: int = 64, padded: bool = True) -> float:
    """Top-1 of a transformers classifier (or PEFT's model on one) on (text, label) items, tokenized by the
    model's own tokenizer as transformers does it: right padding to max_length, the attention mask; or,
    ``padded`` False, one text at a time without padding (PEFT's prompt tuning on a decoder: it hands
    transformers ``inputs_embeds``, and GPT-2 then classifies at the last position, which padding fills)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model.eval()
    hits = 0
    batch_size = batch_size if padded else 1
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            texts, labels = zip(*items[start : start + batch_size])
            batch = tokenizer(
                list(texts),
                padding="max_length" if padded else False,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            hits += int((logits.argmax(-1) == torch.tensor(labels)).sum())
    return hits / len(items)


def config_preprocessing(cfg: dict, model) -> dict:
    """The run's evaluation preprocessing from its config alone, for an export with no header (PEFT's):
    the model's own input size and mean/std (timm's data config, or an HF config), or the preset's."""
    import timm.data

    inner = getattr(model, "base_model", model)
    if hasattr(inner, "config") or hasattr(getattr(inner, "model", None), "config"):
        size = 32
        default = ([0.5] * 3, [0.5] * 3)  # transformers' ViTImageProcessor's
    else:
        data = timm.data.resolve_data_config({}, model=model)
        size, default = model.patch_embed.img_size[0], (list(data["mean"]), list(data["std"]))
    normalize = cfg["data"].get("normalize") or {"petl_vision": "none", "vpetl_bench": "imagenet"}.get(
        cfg.get("protocol"), "model"
    )
    mean, std = {
        "none": ([0.0] * 3, [1.0] * 3),
        "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        "model": default,
    }[normalize]
    interpolation = "bicubic" if cfg.get("protocol") == "petl_vision" else "bilinear"
    return {
        "channels": "RGB",
        "resize": [size, size],
        "interpolation": interpolation,
        "antialias": True,
        "rounded_to_uint8": True,
        "crop": None,
        "scale": 1 / 255,
        "mean": mean,
        "std": std,
    }


def exported_accuracy(case: dict, cfg: dict, run_dir, out_dir, files, num_classes: int) -> float:
    """The test accuracy of the run's export, computed without peftlab's model or numbers."""
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    family, items = case["family"], files[case["data"]][1]
    text = FAMILIES[family][0] == TEXT
    if case["export"] == "merged":
        if family == "gpt2":
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(out_dir))
            return text_accuracy(model, files["gpt2"][0], items, cfg["data"]["max_length"])
        if family == "hf-vit":
            from transformers import AutoModelForImageClassification

            model = AutoModelForImageClassification.from_pretrained(str(out_dir))
            preprocessing = json.loads((out_dir / "peftlab_preprocessing.json").read_text())
        else:
            with safe_open(str(out_dir), "pt") as f:
                header = f.metadata()
            model = timm.create_model(header["timm_model"], **json.loads(header["timm_kwargs"]))
            model.load_state_dict(load_file(str(out_dir)))
            preprocessing = json.loads(header["preprocessing"])
        paths, labels = zip(*items)
        return header_accuracy(model, list(paths), list(labels), preprocessing)
    # PEFT's own loader on the plain base, rebuilt as the run built it (its seed: no weights file)
    from peft import PeftModel

    from peftlab.config.schema import load_config
    from peftlab.models.backbones import HFLogits, build_backbone
    from peftlab.utils.seed import seed_everything

    run_cfg = load_config(run_dir / "config.yaml")
    seed_everything(run_cfg.seed)
    base = build_backbone(run_cfg.model, num_classes)
    hf = isinstance(base, HFLogits)
    model = PeftModel.from_pretrained(base.model if hf else base, str(out_dir))
    if text:  # prompt tuning: PEFT's model agrees with the run's on texts without padding (prompt_learning.py)
        padded = case["method"] != "prompt_tuning"
        return text_accuracy(model, files["gpt2"][0], items, cfg["data"]["max_length"], padded=padded)
    paths, labels = zip(*items)
    return header_accuracy(model, list(paths), list(labels), config_preprocessing(cfg, model))


def report_matches_results(study_dir) -> None:
    """The report's main table gives each configuration's mean test top-1 as results.csv, recomputed."""
    results = pd.read_csv(study_dir / "report" / "results.csv")
    means = results[results["status"] == "completed"].groupby("variant")["metrics.test_top1"].mean() * 100
    lines = (study_dir / "report" / "report.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| Configuration |") and "| Test top-1" in line)
    names = [c.strip() for c in header.strip("|").split("|")]
    column = names.index(next(c for c in names if c.startswith("Test top-1"))) - 1  # table_rows drops the label
    rows = {re.sub(r"\s*[°‡]+$", "", label): cells for label, cells in table_rows(lines).items()}  # marks apart
    for variant, mean in means.items():
        assert rows[variant][column].startswith(f"{mean:.1f}"), (rows[variant], mean)


def table_rows(lines: list[str]) -> dict[str, list[str]]:
    """The rows of the report's main table (markdown), by configuration label: its cells as plain text."""
    start = next(i for i, line in enumerate(lines) if line.startswith("| Configuration |") and "| Test top-1" in line)
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [plain_cell(c) for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def plain_cell(cell: str) -> str:
    """A cell of either table without its markup: bold, math, escaped percent signs, significance stars."""
    cell = re.sub(r"\\mathbf\{([^}]*)\}", r"\1", cell)
    cell = cell.replace("$^{\\circ}$", " °")  # the mark of a configuration at chance, as the report writes it
    cell = cell.replace("**", "").replace("$^{*}$", "").replace("$", "").replace("\\%", "%")
    return cell.replace("\\", "").rstrip("*").strip()


def paper_matches_report(study_dir) -> None:
    """The paper's main table (LaTeX, written by ``peftlab paper``) holds the report's numbers, cell for cell:
    the same configurations, trainable counts, seeds and metric means with their intervals."""
    status, stderr, _, _ = cli_in_process("paper", str(study_dir), "--only", "tables")
    assert status == 0, stderr
    report = table_rows((study_dir / "report" / "report.md").read_text().splitlines())
    tex = (study_dir / "paper" / "tables" / "main_table.tex").read_text()
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    paper = {}
    for line in body.strip().splitlines():
        cells = [plain_cell(c) for c in line.strip().removesuffix("\\\\").split(" & ")]
        paper[cells[0]] = cells[1:]
    assert paper == report and report, (paper, report)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_a_join_runs_exports_and_reports_what_it_measured(case, files, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_DATA_CACHE", str(tmp_path / "cache"))
    if case not in DRAWN:
        write_figures_empty(monkeypatch)
    cfg = run_config(case, files)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    study = {"name": "joins", "base": "base.yaml", "seeds": 1, "methods": {cfg["method"]["name"]: {}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    from peftlab.study.spec import load_study

    spec = load_study(tmp_path / "study.yaml").runs[0]
    run_dir = tmp_path / "out" / "runs" / spec.run_id
    from peftlab.config.schema import dump_config

    (tmp_path / "run.yaml").write_text(dump_config(spec.config))
    status, stderr, _, _ = cli_in_process("train", str(tmp_path / "run.yaml"), "--run-dir", str(run_dir), "--quiet")
    assert status == 0, stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed", result["error"]
    if case["data"] == "vtab1k":  # train800val200: no validation split, nothing evaluated on it
        assert result["metrics"]["val_top1"] is None and result["provenance"]["data"]["split_sizes"]["val"] == 0

    out = tmp_path / ("export" if case["export"] == "peft" or case["family"] in ("hf-vit", "gpt2") else "m.safetensors")
    flag = "--merged" if case["export"] == "merged" else "--peft"
    status, stderr, _, _ = cli_in_process("export", str(run_dir), flag, str(out))
    refusal = REFUSED.get((case["method"], case["export"]))
    if refusal:
        assert_one_line_refusal(status, stderr, *refusal)
    else:
        assert status == 0, stderr
        accuracy = exported_accuracy(case, cfg, run_dir, out, files, result["provenance"]["data"]["num_classes"])
        assert accuracy == pytest.approx(result["metrics"]["test_top1"], abs=1e-9), (accuracy, result["metrics"])

    status, stderr, _, _ = cli_in_process(
        "study", str(tmp_path / "study.yaml"), "--study-dir", str(tmp_path / "out"), "--quiet"
    )
    assert status == 0, stderr  # the run is done: nothing trains again
    status, stderr, _, _ = cli_in_process("report", str(tmp_path / "out"))
    assert status == 0, stderr
    report_matches_results(tmp_path / "out")
    paper_matches_report(tmp_path / "out")
