import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tiers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread for every run the suite starts whose config leaves train.threads null, in this process and
# in every process it starts: `make test` runs two pytest processes on two cores, so runs on all cores would
# put four busy threads on two, and a tiny model's threads then mostly wait on each other. The tests of the
# default thread count unset it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# inductor compiles in the process that compiles, not in a pool of compile workers it starts (one a core): a pool
# worker imports torch and the compiler anew, which the suite's few compiled runs paid in CPU seconds. Side by side on
# a 2-core AMD EPYC (AVX2 only), tests/test_train.py's compiled run: 67.0 and 66.7 CPU s against 80.2 and 73.2 (0.87).
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

from testkit import (  # after the environment above: it may import torch
    TINY_MODEL,
    bitsandbytes_shown_again,
    figures_drawn_only,
    write_figures_empty,
)

# A suite started as a background job of a non-interactive shell (`cmd &` without job control)
# inherits SIGINT ignored, and so would every process it starts: the Ctrl-C tests need it delivered.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config):
    """The suite's profile, when PEFTLAB_TEST_PROFILE names a folder (scripts/test_profile.py, tests/profiling.py)."""
    import profiling

    if os.environ.get(tiers.ENV_TIER) == "ci":
        try:
            tiers.chosen_shard(config.rootpath)
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None

    xdist_controller = not hasattr(config, "workerinput") and config.getoption("numprocesses", None)
    if profiling.FOLDER and not xdist_controller:  # the workers record their own tests
        config.pluginmanager.register(profiling.Profile(profiling.FOLDER), "peftlab-profile")


def pytest_report_header(config):
    if os.environ.get(tiers.ENV_TIER) == "ci":
        return tiers.header(config.rootpath)
    return None


def pytest_collection_modifyitems(config, items):
    """`make test`'s tier (tests/tiers.py): the full tier's cases outside this commit's shard left out, and every
    case the full tier names still a test of the suite (checked where the whole suite was collected). Then the
    files with the most end-to-end tests first, each file's own order kept: `make test` runs
    files side by side in two processes (pytest-xdist, one file to a process), so the long files
    start early and the short ones fill in at the end, instead of one long file running alone last."""
    if os.environ.get(tiers.ENV_TIER) == "ci":
        narrowed = config.option.keyword or config.option.markexpr
        args = [str(config.invocation_params.dir / arg) for arg in config.args]
        whole = tiers.whole_suite(args, Path(__file__).parent) and not narrowed
        if whole and (stale := sorted(set(tiers.FULL) - {item.nodeid for item in items})):
            raise pytest.UsageError(f"tests/tiers.py names {len(stale)} case(s) the suite does not have: {stale[0]}")
        left_out = tiers.left_out(config.rootpath)
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in left_out])
        items[:] = [item for item in items if item.nodeid not in left_out]
    e2e = collections.Counter(item.path for item in items if item.get_closest_marker("e2e"))
    items.sort(key=lambda item: -e2e[item.path])  # a stable sort: files of equal count keep their order


@pytest.fixture
def tiny_model_cfg():
    from peftlab.config.sections import ModelConfig

    return ModelConfig(**TINY_MODEL)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """A tiny HF ViT (2 layers, 64 wide, 32 px, 5 classes) saved with save_pretrained."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    path = tmp_path_factory.mktemp("hf") / "vit"
    torch.manual_seed(0)
    ViTForImageClassification(
        ViTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=32,
            patch_size=8,
            num_labels=5,
        )
    ).save_pretrained(path)
    return path


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root with mount permission only): a file system that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a small tmpfs needs root with mount permission")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture(autouse=True)
def stop_handlers_restored():
    """Each test starts with the Ctrl-C and SIGTERM handlers the session started with: a CLI call
    in this process installs its own (``exit_at_once_on_stops`` ends the process at once), which
    would end pytest itself at a later test's SIGINT."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in previous.items():
        if handler is not None:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def bitsandbytes_importable_again():
    """A test that trains or validates an unquantized run in this process (an in-process ``peftlab train``) hides
    bitsandbytes as that command's own process would for the rest of its life (``libraries.without_bitsandbytes``),
    and PEFT and transformers cache that it is absent: the pytest process goes on, so after such a test bitsandbytes
    is importable again and their cached answers are asked again, or a quantized run in a later test of this worker
    would find it missing."""
    hidden_before = "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None
    yield
    if not hidden_before:
        bitsandbytes_shown_again()


@pytest.fixture(autouse=True)
def model_records_of_the_test(tmp_path_factory, monkeypatch):
    """Each test starts with an empty model-record cache of its own (peftlab.records), in this process and the
    commands it starts: an answer a test expects from the live code is never read from another test's record."""
    from peftlab.records import answers

    monkeypatch.setenv("PEFTLAB_MODEL_CACHE", str(tmp_path_factory.mktemp("model-records")))
    answers.META_MODELS.clear()
    yield
    answers.META_MODELS.clear()


@pytest.fixture(scope="module", autouse=True)
def figures_drawn(request):
    """A module that sets ``FIGURES_DRAWN`` (a tuple of figure names) has every other figure its reports and papers
    build written empty (``testkit.figures_drawn_only``), set up before its module fixtures build one: its tests read
    the text, the tables, the file names and those figures' files."""
    names = getattr(request.module, "FIGURES_DRAWN", None)
    if names is None:
        yield
        return
    with figures_drawn_only(*names):
        yield


@pytest.fixture
def unrendered_figures(monkeypatch):
    """This test's figures built, then written as empty files (``testkit.write_figures_empty``); a module's fixtures
    set up before it draw theirs."""
    write_figures_empty(monkeypatch)


@pytest.fixture(scope="module")
def quick_figures():
    """Every figure drawn and written as ``save_figure`` writes it (labels thinned, names kept intact, each file
    written atomically), in the cheaper encodings of each format: the PNG at 50 dpi, the PDF with Type 3 fonts
    (subsetting and embedding TrueType is a third of a report's cost). For a module whose tests read a report's or
    paper's text, tables and figure files, never a figure's pixels or fonts: test_figures.py holds those (300 dpi,
    TrueType). A module takes it with ``pytestmark = pytest.mark.usefixtures("quick_figures")``, set up before its
    module fixtures build a report or paper."""
    import matplotlib
    from matplotlib.figure import Figure

    real = Figure.savefig

    def savefig(self, fname, **kwargs):
        if kwargs.get("format") == "png":
            kwargs["dpi"] = 50
        with matplotlib.rc_context({"pdf.fonttype": 3}):
            return real(self, fname, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", savefig)
        yield
