"""A method of another installed package, through the ``peftlab.methods`` entry point (peftlab.tuners.plugins):
read only when a config names it, trained by the recipe, tuned and reported in a study beside LoRA (in the
study's worker processes), listed by ``peftlab methods``; a broken plugin is one line naming its distribution
and breaks no other method.

The plugins are installed as ``pip install --target`` lays a package out: its modules beside a
``NAME-VERSION.dist-info`` with METADATA and entry_points.txt, in a directory on sys.path (or PYTHONPATH
for subprocesses). The example is ``tests/plugin_example`` with the entry point its pyproject.toml gives.
"""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from testkit import REPO, TINY_MODEL, cli_here, needs_fashion_mnist

from peftlab.config.schema import load_config
from peftlab.tuners import TUNERS, plugins
from peftlab.tuners.catalog import method_rows
from peftlab.utils.errors import ConfigError

# the report of the tuned study is read as text: its figures built and written empty (conftest.py)
FIGURES_DRAWN = ()

EXAMPLE = REPO / "tests" / "plugin_example"
EXAMPLE_ENTRY_POINTS = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]["entry-points"]
DATA = {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32}


def install(site: Path, dist: str, files: dict[str, str], entry_points: dict[str, str]) -> None:
    """``files`` (path -> source) and the dist-info of distribution ``dist`` 0.1 giving ``entry_points``."""
    for path, source in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[peftlab.methods]\n" + "\n".join(lines) + "\n")


def install_example(site: Path) -> None:
    files = {f"peftlab_mlpbias/{p.name}": p.read_text() for p in (EXAMPLE / "peftlab_mlpbias").glob("*.py")}
    install(site, "peftlab-mlpbias", files, EXAMPLE_ENTRY_POINTS["peftlab.methods"])


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path to install plugins into; the record of plugins read starts empty."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "LOADED", {})
    yield site
    for module in [m for m in sys.modules if m.startswith(("peftlab_mlpbias", "broken_"))]:
        del sys.modules[module]


def env_with(site: Path) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(site)]))


def test_only_a_config_that_names_the_plugin_imports_it_and_neither_imports_torch(site):
    install_example(site)
    code = (
        "import sys; from peftlab.config.schema import load_config; seen = lambda: [m in sys.modules for m in "
        "('peftlab_mlpbias', 'torch')]; load_config(overrides=['method.name=lora']); print(seen()); "
        "cfg = load_config(overrides=['method.name=mlp_bias', 'method.layers=fc2']); print(seen(), cfg.method)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_with(site), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "[False, False]",
        "[True, False] MlpBiasConfig(name='mlp_bias', layers='fc2')",
    ]
    with pytest.raises(ConfigError, match=r"^method.layers='fc3' is invalid: expected one of fc1, fc2, both$"):
        load_config(overrides={"method": {"name": "mlp_bias", "layers": "fc3"}})
    with pytest.raises(ConfigError, match=r"is not an option of method 'lora' \(it belongs to mlp_bias\)"):
        load_config(overrides={"method": {"name": "lora", "layers": "fc2"}})


def test_an_unknown_method_names_the_plugins_there_are(site):
    with pytest.raises(ConfigError, match=r"expected one of full, .*, or a plugin's \(none installed\)$"):
        load_config(overrides={"method": {"name": "mlp_bias"}})
    install_example(site)
    with pytest.raises(ConfigError, match=r"^method.name='mlp_biass' is invalid: .* or a plugin's \(mlp_bias\)$"):
        load_config(overrides={"method": {"name": "mlp_biass"}})


@needs_fashion_mnist()
def test_the_plugin_trains_through_the_recipe_exports_and_is_listed(site, tmp_path):
    from peftlab import cli
    from peftlab.training.run import train

    install_example(site)
    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "data": DATA,
            "method": {"name": "mlp_bias", "layers": "fc2"},
            "train": {"max_steps": 2, "batch_size": 16},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result.get("error")
    assert result["provenance"]["plugin"] == {
        **plugins.identity("mlp_bias"),  # its code, and what its config tells the paper (MethodConfig.describe)
        "description": "MLP-bias tuning trains only the biases of the fc2 Linear of every block's MLP, and the "
        "classifier head.",
        "bibtex": None,
    }
    assert result["provenance"]["plugin"]["distribution"] == "peftlab-mlpbias"
    assert result["provenance"]["plugin"]["version"] == "0.1"
    assert result["params"]["trainable"] == 2 * 64 + (64 + 1) * 10  # fc2's biases of 2 blocks, and the head
    assert cli.main(["export", str(tmp_path / "run"), "--merged", str(tmp_path / "merged.safetensors")]) == 0
    assert (tmp_path / "merged.safetensors").stat().st_size > 0
    (row,) = [row for row in method_rows() if row["name"] == "mlp_bias"]
    assert row == {
        "name": "mlp_bias",
        "source": "plugin peftlab-mlpbias 0.1",
        "adapts": "the biases of each block's MLP (fc1, fc2 or both), and the head",
        "merges": "in place",
        "quantized": "no",
    }


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_tuned_study_runs_the_plugin_beside_lora_in_its_workers_and_reports_it(site, tmp_path):
    install_example(site)
    base = {
        "model": TINY_MODEL,
        "data": DATA,
        "method": {"name": "lora", "r": 2},
        "train": {"max_steps": 12, "batch_size": 32, "eval_batch_size": 32, "threads": 1},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    study = {
        "name": "s",
        "base": "base.yaml",
        "seeds": 2,
        "set": {"method.layers": "fc2"},  # the plugin's own option, foreign to lora
        "methods": {"lora": {}, "mlp_bias": {}},
        "tune": {"axes": {"train.lr": [3e-3, 3e-2]}, "search": "grid", "trials": 2},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    out = tmp_path / "out"
    # in this process, the plugin on its sys.path (``site``): the workers its forkserver forks get that path
    # (multiprocessing's preparation data) and find the plugin through the entry-point metadata there
    args = ["study", str(tmp_path / "study.yaml"), "--study-dir", str(out), "--quiet", "--report", "--workers", "2"]
    proc = cli_here(*args)
    assert proc.returncode == 0, proc.stderr
    assert "4 completed, 0 failed" in proc.stdout
    finals = {p.parent: json.loads(p.read_text()) for p in out.glob("runs/*/result.json")}
    plugin_runs = {d: r for d, r in finals.items() if r["config"]["method"]["name"] == "mlp_bias"}
    assert len(plugin_runs) == 2 and {r["params"]["trainable"] for r in plugin_runs.values()} == {2 * 64 + 650}
    assert all((d / "worker.log").is_file() for d in plugin_runs)  # trained in the runner's worker processes
    report = (out / "report" / "report.md").read_text()
    assert "- methods: lora, mlp_bias" in report and "| mlp_bias | train.lr in {0.003, 0.03} |" in report
    code = {r["provenance"]["plugin"]["code_sha256"] for r in plugin_runs.values()}
    assert (
        len(code) == 1 and f"- plugin method mlp_bias: peftlab-mlpbias 0.1 (code SHA-256 {code.pop()[:12]})" in report
    )
    paper = cli_here("paper", str(out), "--no-compile")  # analysis reads files: in this process, no plugin needed
    assert paper.returncode == 0, paper.stderr
    assert r"\newcommand{\nameMlpBias}{mlp\_bias}" in (out / "paper" / "results.tex").read_text()


def test_a_spawned_worker_finds_the_plugin_from_its_entry_point(site, tmp_path):
    """Under ``--start-method spawn`` each worker is a fresh interpreter (macOS's default): it finds the
    plugin through the entry-point metadata on its path (the study process's, which multiprocessing gives it),
    as the study process did, and trains it."""
    install_example(site)
    base = {
        "model": TINY_MODEL,
        "data": DATA,
        "method": {"name": "mlp_bias", "layers": "fc2"},
        "train": {"max_steps": 4, "batch_size": 32, "eval_batch_size": 32, "threads": 1},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    study = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"mlp_bias": {}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    out = tmp_path / "out"
    args = ["study", str(tmp_path / "study.yaml"), "--study-dir", str(out), "--quiet", "--workers", "1"]
    proc = cli_here(*args, "--start-method", "spawn")  # in this process: the worker is a fresh interpreter all the same
    assert proc.returncode == 0, proc.stderr
    (result,) = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert result["status"] == "completed" and result["config"]["method"]["name"] == "mlp_bias"
    assert result["params"]["trainable"] == 2 * 64 + 650


CONFIG = """from dataclasses import dataclass
from peftlab.config.sections import MethodConfig

@dataclass(frozen=True)
class Config(MethodConfig):
    name: str = "{name}"
"""
UNFROZEN = "from peftlab.config.sections import MethodConfig\n\nclass Config(MethodConfig):\n    name = '{name}'\n"
CHECK = "def check(model, cfg, ctx):\n    pass\n"
GOOD = (
    "from peftlab.tuners import TunerSpec\nfrom {module}.config import Config\n\n"
    "METHOD = TunerSpec(Config, '{module}.model')\n"
)
# method name -> (its package's __init__, config and model (None: no model.py), when it fails, the end of its line)
BROKEN = {
    "fails_import": (
        "import not_installed_dep\n" + GOOD,
        CONFIG,
        CHECK,
        "config",
        "fails to import: ModuleNotFoundError: No module named 'not_installed_dep'",
    ),
    "no_spec": (
        "",
        CONFIG,
        CHECK,
        "config",
        "broken_no_spec has no METHOD: expected TunerSpec(config class, model module)",
    ),
    "not_spec": (
        "from {module}.config import Config\nMETHOD = (Config, '{module}.model')\n",
        CONFIG,
        CHECK,
        "config",
        "gives a tuple, not peftlab.tuners.TunerSpec(config class, model module)",
    ),
    "not_method_config": (
        GOOD.replace("(Config", "(dict"),
        CONFIG,
        CHECK,
        "config",
        "its config class <class 'dict'> is not a subclass of peftlab.config.sections.MethodConfig",
    ),
    "not_frozen": (
        GOOD,
        UNFROZEN,
        CHECK,
        "config",
        "its config class Config is not a frozen dataclass: use @dataclass(frozen=True)",
    ),
    "other_name": (
        GOOD,
        CONFIG.replace("{name}", "elsewise"),
        CHECK,
        "config",
        "its config class Config declares name = 'elsewise', not 'other_name'",
    ),
    "no_model": (GOOD, CONFIG, None, "config", "its model module 'broken_no_model.model' is not found"),
    "Bad-Name": (
        GOOD,
        CONFIG,
        CHECK,
        "config",
        "the name is invalid: expected [a-z][a-z0-9_]{0,39} (lower case, digits, _)",
    ),
    "lora": (
        GOOD,
        CONFIG,
        CHECK,
        "listed",
        "the name is a built-in method's: rename the entry point (the built-in lora is used)",
    ),
    "no_apply": (
        GOOD,
        CONFIG,
        CHECK,
        "validate",
        "broken_no_apply.model has no function 'apply', which every method's module defines",
    ),
    "model_fails": (
        GOOD,
        CONFIG,
        "import not_installed_dep\n",
        "validate",
        "its model module broken_model_fails.model "
        "fails to import: ModuleNotFoundError: No module named 'not_installed_dep'",
    ),
    # a BaseException on import: a plugin's sys.exit(0) made validate exit 0 silently
    "exits_on_import": ("import sys\nsys.exit(0)\n", CONFIG, CHECK, "validate", "fails to import: SystemExit: 0"),
    "model_exits": (
        GOOD,
        CONFIG,
        "raise SystemExit(3)\n",
        "validate",
        "its model module broken_model_exits.model fails to import: SystemExit: 3",
    ),
    "defaults_fail": (
        GOOD,
        CONFIG + "\n    def __post_init__(self):\n        raise RuntimeError('no defaults')\n",
        CHECK,
        "config",
        "its config class Config() fails: RuntimeError: no defaults",
    ),
    # the words it gives the paper (MethodConfig.describe, bibtex) are checked when it is read
    "describe_fails": (
        GOOD,
        CONFIG + "\n    def describe(self):\n        return 1 / 0\n",
        CHECK,
        "config",
        "its config class Config fails on describe(): ZeroDivisionError: division by zero",
    ),
    "describe_math_open": (
        GOOD,
        CONFIG + "\n    def describe(self):\n        return 'Trains $W.'\n",
        CHECK,
        "config",
        "its config class Config.describe() gives 'Trains $W.': expected None or sentences of printable text, "
        "each $ of LaTeX math closed",
    ),
    "bibtex_not_entry": (
        GOOD,
        CONFIG + "    bibtex = 'Smith 2024'\n",
        CHECK,
        "config",
        "its config class Config.bibtex is not a plain BibTeX entry (expected @type{key, ...}): 'Smith 2024'",
    ),
    # its __post_init__ fails on an option (not with peftlab's one-line ConfigError)
    "options_fail": (
        GOOD,
        CONFIG + "    size: int = 1\n\n    def __post_init__(self):\n        assert self.size == 1, 'only 1'\n",
        CHECK,
        "options",
        "its config class Config fails on method: AssertionError: only 1",
    ),
    "check_fails": (
        GOOD,
        CONFIG,
        "def check(model, cfg, ctx):\n    {}['key']\n\ndef apply(model, cfg, ctx):\n    pass\n",
        "validate",
        "its broken_check_fails.model.check() fails: KeyError: 'key'",
    ),
    "apply_fails": (
        GOOD,
        CONFIG,
        CHECK + "\ndef apply(model, cfg, ctx):\n    raise SystemExit('bye')\n",
        "validate",
        "its broken_apply_fails.model.apply() fails: SystemExit: bye",
    ),
}


def install_broken(site: Path, name: str) -> str:
    """Plugin ``broken_<name>`` (distribution ``broken-<name>``) giving method ``name`` as ``BROKEN`` says;
    returns the distribution's name."""
    init, config, model, _, _ = BROKEN[name]
    module = f"broken_{name.lower().replace('-', '_')}"
    files = {f"{module}/__init__.py": init.format(module=module), f"{module}/config.py": config.format(name=name)}
    if model is not None:
        files[f"{module}/model.py"] = model
    dist = f"broken-{name.lower()}"
    install(site, dist, files, {name: f"{module}:METHOD"})
    return f"{dist} 0.1"


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_plugin_is_one_line_naming_its_distribution_and_what_is_wrong(site, name, capsys):
    dist = install_broken(site, name)
    stage, end = BROKEN[name][3:]
    if stage == "listed":  # a config naming it gets the built-in; peftlab methods names the broken plugin
        assert type(load_config(overrides={"method": {"name": name}}).method) is TUNERS[name].config_cls
        (row,) = [row for row in method_rows() if row.get("error")]
        message = row["error"]
    elif stage in ("config", "options"):
        with pytest.raises(ConfigError) as err:
            load_config(overrides={"method": {"name": name, **({"size": 2} if stage == "options" else {})}})
        message = str(err.value)
    else:  # found when the model module is first used: peftlab validate says it, as train would
        from peftlab import cli

        config = site / "run.yaml"
        config.write_text(yaml.safe_dump({"model": TINY_MODEL, "method": {"name": name}}))
        assert cli.main(["validate", str(config)]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        message = line.removeprefix("peftlab: error: ")
    assert message.startswith(f"method {name!r} of plugin {dist}") and message.endswith(end), message
    assert "\n" not in message


def test_two_plugins_of_one_name_are_both_named(site):
    for dist in ("first", "second"):
        files = {f"broken_{dist}/__init__.py": GOOD.format(module=f"broken_{dist}"), f"broken_{dist}/config.py": CONFIG}
        install(
            site,
            f"broken-{dist}",
            {k: v.format(name="twice") for k, v in files.items()},
            {"twice": f"broken_{dist}:METHOD"},
        )
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"method": {"name": "twice"}})
    assert (
        str(err.value)
        == "method 'twice' is given by two plugins, broken-first 0.1 and broken-second 0.1: uninstall one"
    )


def install_malformed(site: Path) -> Path:
    """A distribution whose entry_points.txt importlib.metadata cannot parse; its dist-info folder."""
    unreadable = site / "malformed-0.1.dist-info"
    unreadable.mkdir()
    (unreadable / "METADATA").write_text("Metadata-Version: 2.1\nName: malformed\nVersion: 0.1\n")
    (unreadable / "entry_points.txt").write_text("[peftlab.methods]\nnot an entry point\n")
    return unreadable


def test_a_malformed_distribution_that_breaks_torchs_import_is_one_line_naming_it(site):
    """torch reads every distribution's entry points when it is imported (its device extensions) and fails on
    the malformed one, which peftlab cannot skip there: the command says which distribution, in one line."""
    unreadable = install_malformed(site)
    config = site / "run.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "method": {"name": "lora"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        env=env_with(site),
        timeout=120,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()  # importlib.metadata's own error in the brackets (Python's version's)
    assert line.startswith(f"peftlab: error: {unreadable}: the entry points of this installed distribution cannot")
    assert line.endswith(
        "), and a library (torch, when it is imported) reads those of every distribution: repair or uninstall it"
    )


def test_broken_plugins_leave_the_other_methods_listed_and_working(site):
    install_example(site)
    for name in BROKEN:
        install_broken(site, name)
    unreadable = install_malformed(site)
    code = "import sys; from peftlab import cli; sys.exit(cli.main(['methods', '--json']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_with(site), timeout=60)
    assert out.returncode == 0, out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"peftlab: warning: skipped the entry points of {str(unreadable)!r}, whose metadata")
    assert line.endswith("): its plugins are not found")
    rows = json.loads(out.stdout)
    names = [row["name"] for row in rows]
    assert names[: len(TUNERS) - 1] == [n for n in TUNERS if n != "peft"] and "mlp_bias" in names
    errors = {row["name"]: row["error"] for row in rows if "error" in row}
    assert set(errors) == {n for n, case in BROKEN.items() if case[3] in ("config", "listed")} | {"exits_on_import"}
    assert {row["name"]: row["source"] for row in rows}["no_spec"] == "plugin broken-no_spec 0.1"
    assert load_config(overrides={"method": {"name": "mlp_bias"}}).method.layers == "both"


def test_a_plugins_code_is_part_of_its_run_ids(site):
    """A run of another version of the plugin (another forward, the same version string even) is another run:
    its id differs, so a study trains it again instead of counting the old run as done. Built-in runs keep theirs."""
    from peftlab.config.schema import config_hash

    overrides = {"model": TINY_MODEL, "data": DATA, "method": {"name": "mlp_bias", "layers": "fc2"}}
    lora = config_hash(load_config(overrides={**overrides, "method": {"name": "lora"}}))
    install_example(site)
    before, identity = config_hash(load_config(overrides=overrides)), plugins.identity("mlp_bias")
    assert len(identity["code_sha256"]) == 64 and identity["version"] == "0.1"
    assert config_hash(load_config(overrides=overrides)) == before  # stable while the code is the same
    model = site / "peftlab_mlpbias" / "model.py"
    model.write_text(model.read_text() + "\n# a changed forward\n")
    plugins.LOADED.clear()  # a new process: the plugin is read again
    assert plugins.identity("mlp_bias") is None  # not read yet
    after = config_hash(load_config(overrides=overrides))
    assert after != before and plugins.identity("mlp_bias")["code_sha256"] != identity["code_sha256"]
    assert config_hash(load_config(overrides={**overrides, "method": {"name": "lora"}})) == lora


def test_a_broken_plugin_is_not_offered_among_the_method_names(site):
    """The line that refuses an unknown method.name offers the plugins that load, and names a broken one apart."""
    install_example(site)
    install_broken(site, "fails_import")
    with pytest.raises(ConfigError) as refused:
        load_config(overrides={"method": {"name": "mlp_biass"}})
    line = str(refused.value)
    assert line.endswith("or a plugin's (mlp_bias, broken, see `peftlab methods`: fails_import)"), line
