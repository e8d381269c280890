"""What ``peftlab submission`` packs beside the paper so that the archive reruns itself (``peftlab reproduce``).

- configs/: the study file and every config it reaches (base:, pretrain:), each path in them rewritten to where it
  lies inside the unpacked archive: the base the study's pretraining makes in ``base/`` (not packed: its SHA-256
  is), each dataset in ``data/<name>/`` (not packed: its checksums are, and how to obtain it), any other file or
  folder a config names (an HF model's config.json and tokenizer files, an importance file) packed in ``files/``;
  a weights file or one too large to pack (a base outside the study), or a folder holding one, goes to
  ``supplied/`` instead (``archive.supplied``: the receiver puts it there; archive.json records its SHA-256).
- plugins/<distribution>-<version>/: each plugin method's installed package as ``pip install --target`` lays it
  out (its top-level packages and its dist-info), whose code hashes to the runs' ``code_sha256``.
- results/runs/<run>/: every reported run's spec.json, result.json and generations.jsonl (where it wrote one) as
  the results hash reads them.
- environment.lock: every installed distribution's version (``name==version``), as ``pip freeze`` says it.
- archive.json: what reproduce reads (ARCHIVE_VERSION): the study file, the machine class of the runs, the
  datasets' checksums, the plugins' hashes, the base's SHA-256, the supplied files' SHA-256 and the results hash.

No absolute path of the packing machine is written (``results.portable`` for what the runs recorded).
"""

import importlib.metadata
import os
import re
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from peftlab.analysis.archive.supplied import SUPPLIED, read_by_runs, supplied_entry
from peftlab.analysis.results.load import OPTIONAL_FILES, RESULT_FILES, portable_result, read_result, run_dirs
from peftlab.config.paths import PATH_FIELDS, PATH_WORDS
from peftlab.config.reading import read_yaml
from peftlab.utils.errors import UserError
from peftlab.utils.files import refuse_link

# 2: the files the receiver supplies in supplied/ (not files/), datasets by name checked (issue 79); an archive of
# another version is refused in one line naming both (received.read_archive_record): its checks cannot be made
ARCHIVE_VERSION = 2
ARCHIVE_RECORD = "archive.json"
MAX_PACKED_BYTES = 8 << 20  # a file a config names is packed up to this size (weights and data are not)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
DATA_FIELDS = ("data.root", "data.test_dir")
UNREAD = "unread"  # where a config's path goes that no packed run reads (a study overrides it): nothing is there

# archive.json, as ``submission.archive_record`` writes it and ``received.read_archive_record`` reads it (through
# ``utils.typed_json``): a received archive.json of another shape, or one naming a path outside the archive, is one
# line naming the field. The sizes are far beyond any archive peftlab writes (a dataset's checksums: one per file
# a run read, an image folder's images hashed as one).
MAX_TEXT = 4096  # characters of a name, a version, a path in archive.json
MAX_ENTRIES = 100_000  # entries of one list or object in archive.json
SHA256 = re.compile(r"[0-9a-f]{64}")
PLUGIN_FOLDER = re.compile(r"plugins/[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")  # pack_plugins' plugins/<dist>-<version>
DATA_FOLDER = re.compile(r"data/[^/\\\x00-\x1f\x7f]{1,255}")  # Places.fresh's data/<name>
STUDY_FILE = re.compile(r"configs/[^/\\\x00-\x1f\x7f]{1,255}\.ya?ml")  # pack_configs' configs/<study file>


def text(value: str) -> str | None:
    """For ``Annotated[str, text]``: a text of a bounded length (what reproduce prints of it goes through the
    terminal's escaper; what a shell line takes is ``line``)."""
    return f"expected at most {MAX_TEXT} characters" if len(value) > MAX_TEXT else None


def line(value: str) -> str | None:
    """For ``Annotated[str, line]``: one line of printable text of a bounded length."""
    return text(value) or (None if value.isprintable() else "expected one line of printable text")


def sha256_hex(value: str) -> str | None:
    return None if SHA256.fullmatch(value) else "expected a SHA-256 (64 hexadecimal digits)"


def matching(pattern: re.Pattern, what: str):
    """For ``Annotated[str, matching(...)]``: a path of the one form pack writes there."""

    def check(value: str) -> str | None:
        inside = ".." not in value.split("/") and "/./" not in value and not value.endswith("/.")
        return None if pattern.fullmatch(value) and inside else f"expected {what}"

    return check


def relative_keys(value: dict) -> str | None:
    """For a dataset's checksums: each key a relative path inside the dataset's folder (or an image folder's
    ``images:<n>``), each value a short printable text, at most MAX_ENTRIES of them."""
    if len(value) > MAX_ENTRIES:
        return f"expected at most {MAX_ENTRIES:,} entries"
    for key, sha in value.items():
        parts = key.replace("\\", "/").split("/")
        if (
            not key
            or len(key) > MAX_TEXT
            or not key.isprintable()
            or key.startswith(("/", "~"))
            or ".." in parts
            or re.match(r"[A-Za-z]:", key)
        ):
            return f"its key {key[:80]!r} is no relative path inside the dataset's folder"
        if text(sha) is not None or len(sha) > 200:
            return f"its value for {key[:80]!r} is no checksum"
    return None


def dataset_name(value: str) -> str | None:
    """For a dataset's ``name``: one of the names ``data.name`` takes (``config.checks``), never a path: reproduce
    looks a dataset by name up as ``--data DIR/<name>``."""
    from peftlab.config.checks import DATASET_NAMES, TEXT_DATASET_NAMES

    return None if value in DATASET_NAMES or value in TEXT_DATASET_NAMES else "expected a data.name peftlab reads"


def bounded(value: list | dict) -> str | None:
    return f"expected at most {MAX_ENTRIES:,} entries" if len(value) > MAX_ENTRIES else None


def identifier(value: str) -> str | None:
    return None if value.isidentifier() and value.isascii() else "expected a package's name (a Python identifier)"


class PluginRecord(TypedDict):
    """A plugin the runs trained, packed in ``folder`` (``pack_plugins``)."""

    distribution: Annotated[str, text]
    version: Annotated[str, text]
    code_sha256: Annotated[str, sha256_hex]  # tuners.plugins.folder_code_sha256 of its packages
    folder: Annotated[str, matching(PLUGIN_FOLDER, "plugins/<distribution>-<version>")]
    packages: Annotated[list[Annotated[str, identifier]], bounded]  # its top-level packages (its entry points')


class DataRecord(TypedDict):
    """A dataset the runs read (``data_records``)."""

    name: Annotated[str, dataset_name]  # data.name
    folder: Annotated[str, matching(DATA_FOLDER, "data/<name>")] | None  # where it goes in the archive
    was: NotRequired[Annotated[str, text] | None]  # where the runs read it, portable
    sha256: Annotated[dict[str, str], relative_keys]  # file (relative to the folder) -> SHA-256, as the runs read it
    made_by: NotRequired[Annotated[list[Annotated[str, line]], bounded] | None]  # `peftlab data`'s arguments


class HardwareRecord(TypedDict, total=False):
    gpu: Annotated[str, text] | None  # what reproduce reads of it; the other keys are kept


class ArithmeticRecord(TypedDict, total=False):
    pinned: bool | None
    cpu_vendor: Annotated[str, text] | None
    mkl_branch: Annotated[str, text] | None
    products: Annotated[str, text] | None  # the pin's or an earlier pin's products; None: MKL's (rerun)


class EnvironmentRecord(TypedDict, total=False):
    """The runs' machine (``results.load.environment``)."""

    versions: dict[str, Annotated[str, text] | None] | None
    hardware: HardwareRecord | None
    arithmetic: ArithmeticRecord | None
    threads: int | None
    dtype: Annotated[str, text] | None
    git_sha: Annotated[str, text] | None


class BaseRecord(TypedDict):
    """The base the study's pretraining makes in ``base/``."""

    folder: Literal["base"]
    pretrain: Annotated[str, matching(STUDY_FILE, "configs/<file>.yaml")] | None
    sha256: Annotated[str, sha256_hex] | None
    seconds: float | None


SUPPLIED_PATH = re.compile(r"supplied/[^/\x00-\x1f]+(/[^/\x00-\x1f]+)*")


class SuppliedRecord(TypedDict):
    """A file the receiver supplies in ``supplied/`` (``supplied.supplied_entry``)."""

    path: Annotated[str, matching(SUPPLIED_PATH, "supplied/<name>")]
    sha256: Annotated[str, sha256_hex]
    bytes: int
    field: Annotated[str, text]  # the config field that names it


class SupersededRecord(TypedDict):
    """A run of another version of the study, left out of the archive (``results.load.superseded_runs``)."""

    run: Annotated[str, text]
    seconds: float


def shell_word(value: str) -> str | None:
    """For a recorded command's word: one word of a shell line as ``shlex.quote`` writes it, ``~/`` before it where
    it was a path in the home folder (``submission.shell_word``): nothing a shell would run, expand or split."""
    import shlex

    rest = value[2:] if value.startswith("~/") else value
    try:
        words = shlex.split(rest) if rest else [""]
    except ValueError:
        words = []
    quoted = value in ("~", "~/") or (len(words) == 1 and shlex.quote(words[0]) == rest and value.isprintable())
    return None if quoted else "expected one word of a shell line, as shlex.quote writes it"


class CommandRecord(TypedDict):
    argv: Annotated[list[Annotated[str, shell_word]], bounded]
    cwd: Annotated[str, shell_word] | None


class MadePaths(TypedDict):
    study: Annotated[str, shell_word]
    dir: Annotated[str, shell_word]
    paper: Annotated[str, shell_word]
    out: Annotated[str, shell_word]


class MadeRecord(TypedDict):
    """What REPRODUCE.md says that no packed file holds (``submission.made_record``)."""

    packed_at: Annotated[str, line]  # the commit that packed the archive
    paths: MadePaths  # what the study's, paper's and submission's commands were given, portable, as shell words
    commands: Annotated[list[CommandRecord], bounded]  # those that ran the study (commands.jsonl)
    pretrain_cached: bool  # the study's pretraining found its base trained
    base_train_seconds: float | None  # the base's manifest's


# archive.json's paper_pdf where the packing machine had no LaTeX (submission.latex_absent): the paper without main.pdf
PDF_NOT_PACKED = "not packed: LaTeX (latexmk, pdflatex) was not on PATH where the archive was made"


class ArchiveRecord(TypedDict):  # this module postpones no annotations: TypedDict reads NotRequired itself
    """archive.json."""

    version: Literal[2]  # ARCHIVE_VERSION
    study: Annotated[str, matching(STUDY_FILE, "configs/<file>.yaml")]  # the study file
    name: NotRequired[Annotated[str, text]]  # the study's name
    results_sha256: Annotated[str, sha256_hex]
    environment: EnvironmentRecord
    data: Annotated[list[DataRecord], bounded]
    plugins: Annotated[list[PluginRecord], bounded]
    base: BaseRecord | None
    supplied: Annotated[list[SuppliedRecord], bounded]  # the files the receiver supplies
    repository: NotRequired[Annotated[str, text] | None]  # the checkout's remote, as git knows it
    superseded: NotRequired[Annotated[list[SupersededRecord], bounded]]
    phases: dict[str, Any]
    made: NotRequired[MadeRecord]  # REPRODUCE.md's own words (an archive packed before it has none)
    paper_pdf: NotRequired[Literal[PDF_NOT_PACKED]]  # absent: main.pdf is packed


class Places:
    """Where each path the configs name goes inside the archive (relative to its root), chosen once per path."""

    def __init__(self, root: Path, base_dir: Path | None, read: set[str] | None = None):
        self.root, self.base_dir = root, base_dir
        self.read = read  # the paths the packed runs read (``read_paths``); None: every path a config names
        self.chosen: dict[tuple[str, str], str] = {}
        self.taken: set[str] = set()
        self.data: dict[str, str] = {}  # archive folder -> the dataset's absolute root (for the data record)
        self.supplied: list[dict] = []  # the files the receiver supplies (``supplied.supplied_entry``)

    def place(self, field: str, value: str, read: bool = False) -> str:
        """The archive path (from its root) that replaces ``value`` (absolute) of config field ``field``; ``read``:
        a run reads it whatever ``self.read`` says (the pretraining config's paths)."""
        unread = not read and self.read is not None and not read_by_runs(value, self.read)
        key = ("data" if field in DATA_FIELDS else UNREAD if unread else "file", value)
        if key in self.chosen:
            return self.chosen[key]
        path = Path(value)
        if self.base_dir is not None and (path == self.base_dir or path.is_relative_to(self.base_dir)):
            where = Path("base") / path.relative_to(self.base_dir)  # made by the study's pretraining
            shown = where.as_posix()
        elif field in DATA_FIELDS:
            shown = self.fresh(f"data/{path.name or 'data'}")
            self.data[shown] = value
        elif unread:  # a value every run's config overrides: nothing packed there, nothing to supply
            shown = self.fresh(f"{UNREAD}/{path.name or 'file'}")
        else:
            refuse_link(path, "file a config names")
            where = SUPPLIED if needs_supplying(path) else "files"
            shown = self.fresh(f"{where}/{path.name or 'file'}")
            self.pack(path, self.root / shown, field)
        self.chosen[key] = shown
        return shown

    def fresh(self, name: str) -> str:
        shown, n = name, 1
        while shown in self.taken:
            n += 1
            shown = f"{name}-{n}"
        self.taken.add(shown)
        return shown

    def pack(self, src: Path, dst: Path, field: str) -> None:
        """A file, or a folder's files (not below its subfolders' links), packed when small and no weights;
        others recorded by SHA-256 (``supplied``) for REPRODUCE.md to say where they go and reproduce to check."""
        refuse_link(src, "file a config names")
        for path, out in folder_files(src, dst):
            if too_large(path):
                self.supplied.append(supplied_entry(path, out.relative_to(self.root).as_posix(), field))
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out, follow_symlinks=False)


def folder_files(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """(file, where it goes) for a file, or each of a folder's files (not below its subfolders' links)."""
    if src.is_dir():
        return [(p, dst / p.relative_to(src)) for p in sorted(src.rglob("*")) if p.is_file() and not p.is_symlink()]
    return [(src, dst)] if src.is_file() else []


def too_large(path: Path) -> bool:
    """A file the archive does not pack: weights, or over ``MAX_PACKED_BYTES``."""
    return path.suffix in WEIGHT_SUFFIXES or path.stat().st_size > MAX_PACKED_BYTES


def needs_supplying(path: Path) -> bool:
    """Whether a file or folder a config names holds a file the archive does not pack (``supplied/``)."""
    return any(too_large(file) for file, _ in folder_files(path, path))


def rewrite_paths(data: dict, file_dir: Path, places: Places, from_dir: str = "configs", read: bool = False) -> dict:
    """``data`` (a config as its YAML holds it) with each path of ``PATH_FIELDS`` (nested or dotted, in an axis'
    list or ``{value, set}`` too) replaced by its archive place, relative to ``from_dir`` (where the file lies);
    ``read``: every path it names is read (``Places.place``)."""

    def one(field: str, value):
        if isinstance(value, list):
            return [one(field, v) for v in value]
        if isinstance(value, dict) and "value" in value:
            return {
                **value,
                "value": one(field, value["value"]),
                **({"set": walk(value["set"])} if "set" in value else {}),
            }
        if not isinstance(value, str) or not value or value in PATH_WORDS.get(field, ()):
            return value
        absolute = os.path.normpath(os.path.join(file_dir, os.path.expanduser(value)))
        return os.path.relpath(places.place(field, absolute, read), from_dir)

    def walk(node, prefix: str = ""):
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}" if isinstance(key, str) else key
            if dotted in PATH_FIELDS:
                out[key] = one(dotted, value)
            elif key in ("set", "axes") and isinstance(value, dict):
                out[key] = walk(value)  # a study's set: or axes: (of the study, a method, an ablation): whole keys
            elif isinstance(value, dict) and isinstance(key, str) and "." not in key:
                out[key] = walk(value, f"{dotted}.")
            elif isinstance(value, dict):
                out[key] = walk(value)  # a dotted mapping (set:, axes:): its keys are whole paths
            else:
                out[key] = value
        return out

    return walk(data)


def pack_configs(study, root: Path, base_dir: Path | None, read: set[str] | None = None) -> tuple[str, Places]:
    """The study file and its base and pretraining configs in ``root/configs``, their paths rewritten; returns
    the study file's archive path and where each named path went. ``read``: the paths the packed runs read
    (``read_paths``); a path no run reads (a value the study overrides) is packed nowhere and supplied by no one,
    the pretraining config's excepted (the study's pretraining reads them)."""
    import yaml

    places = Places(root, base_dir, read)
    names: dict[Path, str] = {}
    for config in dict.fromkeys(p for p in (study.path, study.base, study.pretrain) if p):
        name = Path(config).name
        while name in names.values():
            name = f"{Path(name).stem}-1{Path(name).suffix}"
        names[Path(config)] = name
    (root / "configs").mkdir(parents=True, exist_ok=True)
    for config, name in names.items():
        folder = Path(os.path.abspath(config)).parent
        data = rewrite_paths(read_yaml(config), folder, places, read=config == study.pretrain)
        if config == study.path:
            data["base"] = names[Path(study.base)]
            if study.pretrain:
                data["pretrain"] = names[Path(study.pretrain)]
        (root / "configs" / name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return f"configs/{names[Path(study.path)]}", places


def pack_runs(study_dir: Path, root: Path) -> None:
    """Every reported run's spec.json, result.json and generations.jsonl (where it wrote one: ``OPTIONAL_FILES``), as
    the results hash reads them (``portable_result``)."""
    for run_dir in run_dirs(study_dir):
        for name in RESULT_FILES + OPTIONAL_FILES:
            if (run_dir / name).is_file():
                out = root / "results" / "runs" / run_dir.name / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(portable_result(run_dir / name, study_dir))


def pack_plugins(study_dir: Path, root: Path) -> list[dict]:
    """Each plugin distribution the reported runs trained, packed from where it is installed into
    plugins/<distribution>-<version>/ (its top-level packages and dist-info, a ``pip install --target`` layout),
    with the SHA-256 of its code as ``tuners.plugins.code_sha256`` hashes it. An installed version whose code is not
    the runs' is one UserError line: the archive would hold other code than the runs trained."""
    from peftlab.tuners.plugins import folder_code_sha256

    recorded: dict[tuple, dict] = {}
    for run_dir in run_dirs(study_dir):
        plugin = (read_result(run_dir).get("provenance") or {}).get("plugin")
        if isinstance(plugin, dict) and plugin.get("distribution"):
            recorded.setdefault((plugin["distribution"], plugin.get("version"), plugin.get("code_sha256")), plugin)
    out = []
    for dist_name, version, code in recorded:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(
                f"plugin {dist_name} {version}, which the runs trained, is not installed: install it to pack its code"
            ) from None
        packages = sorted(
            {ep.value.split(":")[0].split(".")[0] for ep in dist.entry_points if ep.group == "peftlab.methods"}
        )
        folder = Path("plugins") / f"{dist_name}-{dist.version}"
        located = [Path(str(dist.locate_file(""))) / package for package in packages]
        for package, src in zip(packages, located):
            single = src.with_suffix(".py")
            if src.is_dir():
                shutil.copytree(
                    src, root / folder / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=True
                )
            elif single.is_file():
                shutil.copy2(single, root / folder / single.name)
        info = root / folder / f"{dist_name.replace('-', '_')}-{dist.version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        for name in ("METADATA", "entry_points.txt", "top_level.txt"):
            text = dist.read_text(name)
            if text is not None:
                (info / name).write_text(text)
        packed = folder_code_sha256(root / folder, set(packages))
        if dist.version != version or packed != code:
            raise UserError(
                f"plugin {dist_name} installed here is {dist.version} with code SHA-256 {packed[:12]}, the runs "
                f"trained {version} with {str(code)[:12]}: install the version the runs trained, then pack again"
            )
        out.append(
            {
                "distribution": dist_name,
                "version": version,
                "code_sha256": code,
                "folder": folder.as_posix(),
                "packages": packages,
            }
        )
    return out
