"""The checks every config section shares, and the bounds of what a config may hold.

A leaf: it imports nothing of peftlab but its errors, so the config sections, the tuners'
method configs, the backbones and the quantizers all use these checks without importing
each other. A bad value is one ``ConfigError`` line naming the field, the value and what is
allowed (``fail_field``).
"""

from __future__ import annotations

import functools
import re
import typing
from typing import Any

from peftlab.config.suites import SUITES, suite_dataset_names
from peftlab.utils.errors import ConfigError

# filelist: explicit list files; vtab1k/<task> and fgvc/<name>: the suites of peftlab.config.suites
DATASET_NAMES = (
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "tiny_imagenet",
    "imagefolder",
    "filelist",
    *suite_dataset_names(),
)
# text (peftlab.data.text.tasks): a folder of train/test files (labelled texts; instructions in Alpaca's
# format for a causal LM), or a GLUE task as GLUE's download script writes it
GLUE_TASKS = ("sst2", "mrpc", "rte", "cola", "qnli")
GLUE_PAIR_DATA = ("glue/mrpc", "glue/rte", "glue/qnli")  # sentence pairs (peftlab.data.text.glue: two text columns)
MAX_SEPARATOR_CHARS = 64  # data.pair_separator
TEXT_DATASET_NAMES = ("text", "instructions", *(f"glue/{task}" for task in GLUE_TASKS))
DATASET_CLASSES = {
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "tiny_imagenet": 200,
    **{f"{suite}/{task.name}": task.num_classes for suite, tasks in SUITES.items() for task in tasks.values()},
    **{f"glue/{task}": 2 for task in GLUE_TASKS},
}

# What a config or study file may be: beyond these it is refused with one line, before it
# can exhaust memory or the stack (a file of /dev/zero, a YAML alias bomb, 5,000-deep lists).
MAX_FILE_BYTES = 1 << 20  # 1 MiB: real configs and studies are a few KiB
MAX_NESTING = 32  # mappings and lists inside each other
MAX_DIGITS = 40  # in one number of the file (Python refuses to read 4,300)
MAX_INT = 2**31 - 1  # every integer of a config: |value| <= MAX_INT (seeds, sizes, steps, ranks)
MAX_THREADS = 1024
MAX_IMG_SIZE = 8192
MAX_DEPTH = 256  # transformer blocks (timm's deepest ViTs have 48)
MAX_EMBED_DIM = 65536
MAX_TEXT_TOKENS = 1 << 17  # data.max_length: tokens per text example
MAX_MLP_DIM = 4 * MAX_EMBED_DIM  # an HF config's intermediate_size (timm's ViTs: 4 x embed_dim)


# A Hugging Face hub model repository as model.name names it for an HF model of pretrained: hub: org/name,
# optionally @revision (a branch, a tag or a commit; pin a commit for a run id that means one set of weights),
# of the characters huggingface_hub allows (no "--" or "..", not ending in .git)
_HUB_PART = r"\w(?:[\w.-]{0,94}\w)?"
HUB_REPO_ID = re.compile(rf"(?!.*(?:--|\.\.)){_HUB_PART}/{_HUB_PART}(?<!\.git)(?:@\w[\w./-]{{0,199}})?", re.ASCII)


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened: an error line stays one readable line whatever the input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...{text[-12:]} ({len(text)} characters)"


def fail_field(field_name: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"{field_name}={shown(value)} is invalid: expected {allowed}")


def check_field(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    if not ok:
        fail_field(field_name, value, allowed)


def check_prompt_format(prompt_format: str, name: str) -> None:
    """data.prompt_format: dialogue only for instruction data (data.name: instructions)."""
    check_field(
        prompt_format == "alpaca" or name == "instructions",
        "data.prompt_format",
        prompt_format,
        "alpaca unless data.name is 'instructions' (a causal LM's instruction rows)",
    )


def check_pair_separator(separator: str | None, pairs: bool) -> None:
    """data.pair_separator: null, or a short text for data that holds sentence pairs (``pairs``)."""
    check_field(
        separator is None or (len(separator) <= MAX_SEPARATOR_CHARS and "\0" not in separator),
        "data.pair_separator",
        separator,
        f"null (the tokenizer's end-of-sequence token) or a text of at most {MAX_SEPARATOR_CHARS} characters",
    )
    check_field(
        separator is None or pairs,
        "data.pair_separator",
        separator,
        f"null unless the data is sentence pairs (data.text_pair_column, {', '.join(GLUE_PAIR_DATA)})",
    )


def check_dataset_name(name: str) -> None:
    suites = ", ".join(f"{suite}/<{'|'.join(tasks)}>" for suite, tasks in SUITES.items())
    text = f"text, instructions, glue/<{'|'.join(GLUE_TASKS)}>"
    check_field(
        name in DATASET_NAMES or name in TEXT_DATASET_NAMES,
        "data.name",
        name,
        "one of " + ", ".join(n for n in DATASET_NAMES if "/" not in n) + f", {suites}, {text}",
    )


# How the regex fields are matched against module names: each pattern is checked in that form.
WHOLE_NAME = "{}"  # re.fullmatch(pattern, name): method.target_modules
NAME_SUFFIX = r"(.*\.)?({})$"  # PEFT's rule for method.rank_pattern / alpha_pattern keys (re.match)
NAME_COMPONENTS = r"(.*\.)?({})(\..*)?"  # quant.skip: whole dot-separated components (re.fullmatch)
MAX_PATTERN_CHARS = 256
# Module names are short (under 100 characters), so a pattern with a few unnested parts of varying
# length matches in well under a second in the worst case; nested quantifiers take forever ("(.*.*)*z"),
# and so does a row of optional parts (".?" forty times: 2**40 ways to fail).
MAX_PATTERN_REPEATS = 4


def _varies(parsed) -> bool:
    """Whether a parsed pattern can match texts of more than one length."""
    low, high = parsed.getwidth()
    return low != high


def _repeats(parsed, nested: bool = False) -> int:
    """The parts of varying length (quantifiers, ``?`` included, and alternatives of unequal length)
    in a pattern parsed by ``re._parser``; a ValueError naming what makes matching slow or changes
    meaning inside a larger pattern."""
    count = 0
    for op, arg in parsed:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            loops = arg[1] > 1
            varies = loops or arg[0] != arg[1] or _varies(arg[2])
            if varies and nested:
                raise ValueError(
                    "a quantifier inside a quantified group (nested quantifiers can take exponential time)"
                )
            count += varies + _repeats(arg[2], nested or loops)
        elif name == "BRANCH":
            if nested:
                raise ValueError("an alternation inside a quantified group (it can take exponential time)")
            count += len({branch.getwidth() for branch in arg[1]}) > 1 or any(map(_varies, arg[1]))
            count += sum(_repeats(branch, nested) for branch in arg[1])
        elif name in ("GROUPREF", "GROUPREF_EXISTS"):
            raise ValueError("a backreference (group numbers change when the pattern is embedded)")
        elif name == "SUBPATTERN":
            count += _repeats(arg[3], nested)
        elif name in ("ASSERT", "ASSERT_NOT"):
            count += _repeats(arg[1], nested)
        elif name == "ATOMIC_GROUP":
            count += _repeats(arg, nested)
    return count


@functools.lru_cache(maxsize=1024)  # a study checks each pattern of each of its 10,000 configs
def check_regex(field_name: str, pattern: str, form: str = WHOLE_NAME) -> None:
    """A ConfigError naming ``field_name`` unless ``pattern`` compiles as it is used (``form`` with
    the pattern in place of ``{}``) and matches a module name in bounded time: at most
    ``MAX_PATTERN_CHARS`` characters and ``MAX_PATTERN_REPEATS`` quantifiers, none nested."""
    if len(pattern) > MAX_PATTERN_CHARS:
        fail_field(field_name, pattern, f"a regular expression of at most {MAX_PATTERN_CHARS} characters")
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as err:
        fail_field(field_name, pattern, f"a valid regular expression ({err})")
    used = form.replace("{}", pattern)
    try:
        re.compile(used)
    except (re.error, RecursionError, OverflowError) as err:
        fail_field(
            field_name,
            pattern,
            f"a regular expression that still compiles inside {form} ({err}); a flag "
            "goes in a group, (?i:...), not at the start",
        )
    try:
        repeats = _repeats(re._parser.parse(pattern))
    except ValueError as err:
        fail_field(field_name, pattern, f"a regular expression without {err}")
    if repeats > MAX_PATTERN_REPEATS:
        fail_field(
            field_name,
            pattern,
            f"a regular expression with at most {MAX_PATTERN_REPEATS} quantifiers "
            f"or alternatives of unequal length (*, +, ?, {{m,n}}, a|bc); it has {repeats}",
        )


def check_steps(value: int | float, field_name: str) -> None:
    """A schedule field (AdaLoRA's tinit, the adaptive method's warmup) is steps or a fraction of the run."""
    if isinstance(value, float):
        check_field(0.0 <= value < 1.0, field_name, value, "an integer number of steps >= 0 or a fraction in [0, 1)")
    else:
        check_field(value >= 0, field_name, value, "an integer number of steps >= 0 or a fraction in [0, 1)")


def resolve_steps(value: int | float, total: int, field_name: str) -> int:
    """An integer is a number of optimizer steps; a number below 1 a fraction of the run's steps."""
    if isinstance(value, float):
        return int(round(value * total))
    return int(value)


def check_modality(model, data) -> None:
    """One ConfigError line when the data is not what the model reads: text data (``data.name`` text or
    glue/<task>) for a text model (``model.source: hf-text``), images for every other."""
    text_data = data.name in TEXT_DATASET_NAMES
    if model.task == "causal-lm" and data.name not in ("text", "instructions"):
        raise ConfigError(
            f"data.name={data.name!r} is not language-model data: expected instructions or text for "
            "model.task='causal-lm'"
        )
    if model.source == "hf-text" and not text_data:
        raise ConfigError(
            f"data.name={data.name!r} is image data and model.source='hf-text' reads text: "
            "expected data.name text or glue/<task>"
        )
    if model.source != "hf-text" and text_data:
        raise ConfigError(
            f"data.name={data.name!r} is text data and model.source={model.source!r} reads images: "
            "expected model.source hf-text"
        )
    if text_data and data.augment:
        raise ConfigError("data.augment=true crops and flips images: expected false for text data")


def check_num_classes(cfg) -> None:
    """What train refuses once the data is read: a head with fewer classes than the data has, and
    ``data.classes`` labels the dataset does not have."""
    labels = DATASET_CLASSES.get(cfg.data.name)
    if cfg.data.classes and labels is not None and max(cfg.data.classes) >= labels:
        fail_field(
            "data.classes",
            list(cfg.data.classes),
            f"labels of {cfg.data.name}, which has {labels} classes (0 to {labels - 1})",
        )
    classes = len(cfg.data.classes) if cfg.data.classes else labels
    if cfg.model.num_classes is not None and classes is not None and cfg.model.num_classes < classes:
        fail_field("model.num_classes", cfg.model.num_classes, f"at least {classes}, the classes of the data")


# what other tools of the field call a key peftlab names otherwise (HF Trainer, PEFT's docs, timm's scripts)
KEY_ALIASES = {
    "learning_rate": "lr",
    "rank": "r",
    "lora_r": "r",
    "alpha": "lora_alpha",
    "dropout": "lora_dropout",
    "wd": "weight_decay",
    "batch": "batch_size",
    "bs": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "num_train_epochs": "epochs",
    "max_epochs": "epochs",
    "num_epochs": "epochs",
    "steps": "max_steps",
    "num_steps": "max_steps",
    "targets": "target_modules",
    "target": "target_modules",
    "model_name": "name",
    "arch": "name",
    "dataset": "name",
    "gradient_clipping": "clip_grad",
    "max_grad_norm": "clip_grad",
    "warmup": "warmup_ratio",
    "label_smoothing_factor": "label_smoothing",
}


def closest(word: str, choices, prefix: str = "") -> str | None:
    """The choice ``word`` most likely meant: the field's own name for it (``KEY_ALIASES``: learning_rate is lr,
    rank is r), else the nearest by edit distance (difflib's ratio) over the choices and the other tools' names for
    them (``learnig_rate`` is near learning_rate, which is lr), by the whole dotted name (``prefix + word`` against
    ``prefix + choice``), so a short key is not lost to a longer one that merely shares letters; None when nothing
    is near."""
    import difflib

    choices = [str(c) for c in choices]
    alias = KEY_ALIASES.get(str(word).lower().replace("-", "_"))
    if alias in choices:
        return alias
    whole = {prefix + c: c for c in choices}
    whole.update({prefix + a: c for a, c in KEY_ALIASES.items() if c in choices and prefix + a not in whole})
    close = difflib.get_close_matches(prefix + str(word), list(whole), n=1, cutoff=0.6)
    return whole[close[0]] if close else None


# what a string field takes, where a value of another type (timm's `pretrained=True`) needs the choices said
STRING_VALUES = {
    "model.pretrained": "a string: none (random weights), hub (the model's weights from the HF hub cache) or the "
    "path of a .safetensors weights file",
    "model.name": "a string: a timm model name (timm.list_models()) or an HF model id",
    "model.source": "a string: timm, hf or hf-text",
    "data.name": "a string: a dataset name (peftlab data info lists them) or imagefolder, filelist, text",
    "method.name": "a string: a method's name (peftlab methods lists them)",
}


MAX_TEXT_CHARACTERS = 300  # a paper's table, a model, a protocol note: a line, never a page


def received_text(where: str, value, optional: bool = False) -> None:
    """A text field of a file someone else may have written (a ``--literature`` file's) as any received text: one
    line of printable characters, not blank, at most ``MAX_TEXT_CHARACTERS`` (it reaches report.md, the paper's
    tables and the terminal); None where ``optional``. Anything else is one ConfigError line naming ``where``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}={value!r:.80}: expected {'null or ' if optional else ''}a non-empty text")
    if not value.isprintable() or len(value) > MAX_TEXT_CHARACTERS:
        raise ConfigError(
            f"{where}={value[:60]!r}{'...' if len(value) > 60 else ''}: expected one line of printable text of at "
            f"most {MAX_TEXT_CHARACTERS} characters (no control character, newline or bidirectional override)"
        )
