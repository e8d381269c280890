import pytest
import yaml
from testkit import TINY_MODEL, cpu_seconds

from peftlab.study.report_options import ReportOptions, read_report_options
from peftlab.study.spec import load_study
from peftlab.utils.errors import ConfigError

BASE = {"model": TINY_MODEL, "data": {"name": "fashion_mnist", "train_subset": 64}}


def write_study(tmp_path, study: dict, base: dict = BASE):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **study}))
    return path


def test_expansion_counts_labels_and_stable_ids(tmp_path):
    path = write_study(
        tmp_path,
        {
            "seeds": 3,
            "methods": {"full": {}, "linear": {"set": {"train.lr": 0.01}}, "lora": {"axes": {"method.r": [4, 8]}}},
            "ablations": {"alpha": {"methods": ["lora"], "axes": {"method.lora_alpha": [8, 16]}}},
        },
    )
    study = load_study(path)
    variants = [s.variant for s in study.runs]
    # lora r=8 alpha=16 is both a main run and an alpha-ablation run: trained once, in both groups
    assert sorted(set(variants)) == sorted({"full", "linear", "lora r=4", "lora r=8", "lora alpha=8"})
    assert len(study.runs) == 3 * 5
    shared = [s for s in study.runs if s.variant == "lora r=8"]
    assert all(s.groups == ("main", "alpha") for s in shared)
    assert [s.run_id for s in load_study(path).runs] == [s.run_id for s in study.runs]
    assert len({s.run_id for s in study.runs}) == len(study.runs)
    linear = next(s for s in study.runs if s.variant == "linear")
    assert linear.config.train.lr == 0.01 and linear.config.method.name == "linear"


def test_per_value_overrides_and_exclude(tmp_path):
    path = write_study(
        tmp_path,
        {
            "seeds": [7],
            "axes": {"data.name": [{"value": "fashion_mnist", "set": {"train.epochs": 2}}, "mnist"]},
            "methods": {"full": {}, "lora": {}},
            "exclude": [{"method.name": "full", "data.name": "mnist"}],
        },
    )
    runs = load_study(path).runs
    assert sorted(s.variant for s in runs) == ["full data=fashion_mnist", "lora data=fashion_mnist", "lora data=mnist"]
    assert {s.config.data.name: s.config.train.epochs for s in runs} == {"fashion_mnist": 2, "mnist": 1}
    assert all(s.seed == 7 for s in runs)


@pytest.mark.parametrize(
    "study, message",
    [
        (
            {"methods": {"lora": {"axes": {"method.r": [4, 0]}}}},
            r"study method 'lora' \(method.r=0\): method.r=0 is invalid",
        ),
        ({"methods": {"lorra": {}}}, r"study axis 'methods' value 'lorra' is invalid"),  # dora is a method now
        (
            {"methods": {"lora": {"axes": {"method.rank": [4]}}}},
            r"study method 'lora' axis 'method.rank' is not a config field",
        ),
        ({"methods": {"lora": {"axes": {"method.r": 4}}}}, r"study axis 'method.r' must be a non-empty list"),
        ({"methods": {"full": {}}, "seeds": 0}, r"study axis 'seeds' value 0 is invalid"),
        ({"methods": {"full": {}}, "sedes": 3}, r"unknown key 'sedes'"),
        ({"methods": {"full": {}}, "ablations": {"r": {"methods": ["lora"], "axes": {}}}}, r"names method 'lora'"),
        (
            {"methods": {"full": {}}, "report": {"interval": "wald"}},
            r"study report.interval='wald' is invalid: expected one of t, bca, percentile",
        ),
        (
            {"methods": {"full": {}}, "report": {"colours": {}}},
            r"study report: unknown key 'colours'; allowed: interval, labels, trainable_share_at_most",
        ),
        ({"methods": {"full": {}}, "report": {"labels": ["full"]}}, r"study report.labels must be a mapping"),
        (
            {"methods": {"lora": {}}, "report": {"trainable_share_at_most": {"lora": 30}}},
            r"report.trainable_share_at_most\['lora'\]=30 is invalid: expected a share in \(0, 1\] \(0.003 is 0.3%\)",
        ),
        (
            {"methods": {"lora": {}}, "report": {"trainable_share_at_most": {"dora": 0.003}}},
            r"study report.trainable_share_at_most key 'dora' names no configuration or method of the study",
        ),
        ({"methods": {"full": {}}, "report": {"labels": {"full": ""}}}, r"report.labels\['full'\]='' is invalid"),
        ({"methods": {"full": {}}, "report": {"labels": {"full": "$r=4"}}}, r"a \$ opens LaTeX math that no \$ closes"),
        (
            {"methods": {"lora": {"axes": {"method.r": [4, 8]}}}, "report": {"labels": {"lora r=3": "x"}}},
            r"report.labels key 'lora r=3' names no configuration or method of the study; "
            r"expected one of: lora, lora r=4",
        ),
    ],
)
def test_invalid_studies_fail_with_one_line(tmp_path, study, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_study(write_study(tmp_path, study))
    assert "\n" not in str(err.value)


def test_a_rank_axis_crossed_with_full_gives_one_full_run_per_seed(tmp_path):
    base = {**BASE, "method": {"name": "lora", "r": 8, "lora_alpha": 16}}
    path = write_study(
        tmp_path,
        {
            "seeds": 2,
            "axes": {"method.r": [4, 8]},
            "set": {"method.lora_alpha": 8},
            "methods": {"full": {}, "lora": {}, "linear": {}},
        },
        base=base,
    )
    study = load_study(path)
    by_variant = {}
    for spec in study.runs:
        by_variant.setdefault(spec.variant, []).append(spec)
    assert sorted(by_variant) == ["full", "linear", "lora r=4", "lora r=8"]
    assert [s.seed for s in by_variant["full"]] == [0, 1]
    assert "r" not in vars(by_variant["full"][0].config.method)
    assert by_variant["lora r=4"][0].config.method.lora_alpha == 8


def test_a_foreign_option_in_a_methods_own_set_is_an_error(tmp_path):
    path = write_study(tmp_path, {"methods": {"full": {"set": {"method.r": 4}}}})
    with pytest.raises(
        ConfigError,
        match=r"method.r' is not an option of method 'full' \(it belongs to lora, adaptive, qalora, fact_tt, fact_tk, "
        r"dora, vera, loha, lokr, oft\)",
    ):
        load_study(path)


def test_report_section_is_read_from_the_study_and_from_a_study_directory_copy(tmp_path):
    report = {"interval": "bca", "labels": {"lora r=4": "LoRA ($r{=}4$)", "full": "Full FT", "lora": "LoRA \\$5"}}
    path = write_study(tmp_path, {"methods": {"full": {}, "lora": {"axes": {"method.r": [4, 8]}}}, "report": report})
    assert load_study(path).report == ReportOptions(interval="bca", labels=report["labels"])
    # the copy in a study directory is read without its base config
    copy = tmp_path / "out" / "study.yaml"
    copy.parent.mkdir()
    copy.write_text(path.read_text())
    (tmp_path / "base.yaml").unlink()
    assert read_report_options(copy) == ReportOptions(interval="bca", labels=report["labels"])
    assert read_report_options(tmp_path / "none.yaml") == ReportOptions()
    copy.write_text(yaml.safe_dump({"report": {"interval": "BCa"}}))
    with pytest.raises(ConfigError, match=r"study.yaml: study report.interval='BCa' is invalid"):
        read_report_options(copy)


def test_report_section_defaults_to_the_t_interval(tmp_path):
    assert load_study(write_study(tmp_path, {"methods": {"full": {}}})).report == ReportOptions(interval="t", labels={})


@pytest.mark.parametrize(
    "study, needle",
    [
        ({"methods": {"lora": {"set": {"method.name": "full"}}}}, "study method 'lora' set key method.name is invalid"),
        (
            {"methods": {"lora": {"axes": {"method.name": ["full", "lora"]}}}},
            "study method 'lora' axis method.name is invalid",
        ),
        (
            {"methods": {"lora": {"axes": {"method.r": [{"value": 4, "set": {"method.name": "full"}}, 8]}}}},
            "study method 'lora' axis 'method.r' set key method.name is invalid",
        ),
        ({"axes": {"method.name": ["full"]}, "methods": {"lora": {}}}, "study set/axes key method.name is invalid"),
        (
            {"methods": {"lora": {}}, "ablations": {"a": {"axes": {"method.name": ["full"]}}}},
            "study ablation 'a' axis method.name is invalid",
        ),
        (
            {
                "methods": {"lora": {"tune": {"axes": {"method.name": ["full", "lora"]}}}},
                "tune": {"search": "grid", "axes": {"train.lr": [0.1]}},
            },
            "study method 'lora' tune.axes key method.name is invalid",
        ),
        (
            {"methods": {"lora": {}}, "tune": {"search": "grid", "axes": {"method.name": ["full"]}}},
            "study tune.axes key method.name is invalid",
        ),
    ],
)
def test_a_method_name_in_set_or_axes_is_an_error_not_another_method_under_this_label(tmp_path, study, needle):
    """Else `lora: {set: {method.name: full}}` trains full fine-tuning that a report calls lora."""
    with pytest.raises(ConfigError) as err:
        load_study(write_study(tmp_path, {"seeds": 1, **study}))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_method_name_in_an_exclude_rule_still_selects_runs(tmp_path):
    runs = load_study(
        write_study(tmp_path, {"seeds": 1, "methods": {"full": {}, "lora": {}}, "exclude": [{"method.name": "full"}]})
    ).runs
    assert [s.method for s in runs] == ["lora"] and runs[0].config.method.name == "lora"


def test_many_exclude_rules_select_the_same_runs_in_seconds(tmp_path):
    """Rules are indexed by their first key: 200 runs x 5,000 rules took minutes when each rule
    flattened each run's config."""
    rules = [{"method.r": 10_000 + i} for i in range(5000)] + [{"method.r": [3, 5], "seed": 1}, {"seed": [0]}]
    path = write_study(
        tmp_path, {"seeds": 2, "methods": {"lora": {"axes": {"method.r": list(range(1, 101))}}}, "exclude": rules}
    )
    start = cpu_seconds()
    runs = load_study(path).runs
    assert cpu_seconds() - start < 60
    kept = sorted((s.config.method.r, s.seed) for s in runs)
    assert kept == [(r, 1) for r in range(1, 101) if r not in (3, 5)]


def test_validate_study_builds_one_meta_model_per_architecture(tmp_path, monkeypatch):
    import peftlab.tuners.params
    from peftlab.study.preflight import validate_study

    built = []
    real = peftlab.tuners.params.meta_backbone
    monkeypatch.setattr(
        peftlab.tuners.params,
        "meta_backbone",
        lambda model_cfg, num_classes: built.append(model_cfg.depth) or real(model_cfg, num_classes),
    )
    path = write_study(
        tmp_path, {"seeds": 1, "methods": {"lora": {"axes": {"method.r": list(range(1, 41)), "model.depth": [1, 2]}}}}
    )
    validate_study(load_study(path))
    assert sorted(built) == [1, 2]
    bad = write_study(
        tmp_path,
        {
            "seeds": 1,
            "methods": {
                "lora": {
                    "axes": {"method.r": [4, 8], "method.target_modules": [["blocks.0.attn.qkv"], ["nothing_matches"]]}
                }
            },
        },
    )
    with pytest.raises(ConfigError, match="nothing_matches"):
        validate_study(load_study(bad))


def test_ia3_in_a_study_whose_base_is_loras_adapts_its_papers_places(tmp_path):
    """The base's target_modules 'standard' (LoRA's q, v) is IA3's own preset: k, v and fc2's input. It
    was LoRA's q, v, and IA3's default fc2 feed-forward module matched none of them; and its run id is that
    of the regexes IA3's default was (configs/studies/methods.yaml named them, and keeps its run ids)."""
    from peftlab.study.preflight import validate_study
    from peftlab.tuners.params import meta_model
    from peftlab.tuners.peft_injection import plan_targets

    base = {**BASE, "method": {"name": "lora", "r": 8, "lora_alpha": 16, "target_modules": "standard"}}
    study = load_study(write_study(tmp_path, {"methods": {"lora": {}, "ia3": {}}}, base=base))
    validate_study(study)
    ia3 = next(s for s in study.runs if s.config.method.name == "ia3")
    assert ia3.config.method.target_modules == "standard"
    targets = plan_targets(meta_model(ia3.config), ia3.config.method)[1]
    assert sorted(targets) == sorted(
        f"blocks.{i}.{m}" for i in range(TINY_MODEL["depth"]) for m in ("attn.qkv.k", "attn.qkv.v", "mlp.fc2")
    )
    explicit = load_study(
        write_study(
            tmp_path,
            {
                "methods": {
                    "ia3": {
                        "set": {"method.target_modules": [r"blocks\.\d+\.attn\.qkv\.[kv]", r"blocks\.\d+\.mlp\.fc2"]}
                    }
                }
            },
            base=base,
        )
    )
    assert [s.run_id for s in explicit.runs] == [s.run_id for s in study.runs if s.config.method.name == "ia3"]


def test_the_dry_run_table_reads_the_runs_that_have_a_directory(tmp_path):
    """Statuses and the time estimate from the run directories present; a run without one is pending."""
    import json

    from peftlab.study.estimate import dry_run_table

    study = load_study(write_study(tmp_path, {"seeds": 4, "methods": {"lora": {}}}))
    runs = tmp_path / "out" / "runs"
    done, failed, partial, pending = (runs / spec.run_id for spec in study.runs)
    for run_dir, result in (
        (done, {"status": "completed", "metrics": {"test_top1": 0.5}, "timing": {"wall_seconds": 120}}),
        (failed, {"status": "failed", "error": "x"}),
    ):
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps(result))
    (partial / "checkpoint").mkdir(parents=True)
    table = dry_run_table(study, tmp_path / "out").splitlines()
    assert [line.split()[1] for line in table[1:5]] == ["completed", "failed", "partial", "pending"]
    assert table[-1] == (
        "4 runs: 1 done, 1 failed, 0 diverged, 1 partial, 1 pending; remaining time: about 4.0 min "
        "(mean of 1 finished runs)"
    )
    lines = dry_run_table(study, tmp_path / "none").splitlines()
    assert lines[-2].endswith("4 pending; remaining time: unknown until a run finishes")
    assert lines[-1].startswith("compute: ")
