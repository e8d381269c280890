"""A received plugin's package named as an installed distribution's module is named, whether or not the scan of the
installed distributions runs (``plugins.installed_owners`` skips it where no package name is findable here)."""

import pytest

from peftlab.analysis.archive import plugins


def received(tmp_path, package: str) -> dict:
    plugin = {"folder": "plugins/p", "distribution": "peftlab-x", "version": "0.1", "packages": [package]}
    (tmp_path / "plugins" / "p" / package).mkdir(parents=True)
    (tmp_path / "plugins" / "p" / plugins.dist_info(plugin)).mkdir()
    return {"plugins": [plugin]}


@pytest.mark.parametrize(
    "package, named",
    [
        ("yaml", "has the name of installed PyYAML's module yaml"),
        ("json", "has the name of Python's own module json"),
        ("peftlab_x", None),
    ],
)
def test_a_package_named_as_an_installed_module_is_named(tmp_path, package, named):
    lines = plugins.check_plugin_folders(tmp_path, received(tmp_path, package))
    assert [line for line in lines if "has the name of" in line] == (
        [f"plugin peftlab-x 0.1 in plugins/p: its package {package} {named}"] if named else []
    )


def test_the_scan_runs_only_where_a_name_is_found_here(monkeypatch):
    scans = []
    import importlib.metadata

    original = importlib.metadata.packages_distributions
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: scans.append(1) or original())
    assert plugins.installed_owners({"peftlab_x", "json"}) == {} and scans == []
    assert "PyYAML" in plugins.installed_owners({"peftlab_x", "yaml"})["yaml"] and scans == [1]
    assert plugins.installed_owners({"a.b"}) and scans == [1, 1]  # never looked up: the scan decides
