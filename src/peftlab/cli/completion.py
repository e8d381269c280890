"""Shell completion through argcomplete: ``peftlab completion bash|zsh|fish`` prints the script a shell sources
(docs/commands.md, "Shell completion"), and ``complete_if_asked`` answers that script's questions.

The script calls ``peftlab`` itself with ``_ARGCOMPLETE`` set, ``COMP_LINE`` and ``COMP_POINT`` (argcomplete's
protocol); the command builds its parser as for any command and hands it to ``argcomplete.autocomplete``,
which writes the candidates to file descriptor 8 (or ``_ARGCOMPLETE_STDOUT_FILENAME``) and ends the process.
argcomplete is imported only then: every other command pays nothing for completion.

argparse completes the subcommands, options and choices by itself; ``COMPLETERS`` adds what it cannot know:
config files, directories, and the dotted config keys of overrides (``train.l`` -> ``train.lr=``), with the
values of a key whose type is a fixed set (``train.precision=`` -> auto, fp32, bf16, fp16).
"""

from __future__ import annotations

import argparse
import os
import types
import typing

SHELLS = ("bash", "zsh", "fish")


def add_completion(sub) -> None:
    p = sub.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish (docs/commands.md says where to put it)",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell that sources the script")
    p.set_defaults(func=cmd_completion)


def cmd_completion(args) -> int:
    from argcomplete import shellcode

    print(shellcode(["peftlab"], shell=args.shell), end="")
    return 0


def complete_if_asked(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request and end the process (argcomplete's ``os._exit``); return at once otherwise.
    The test is argcomplete's own first line, made here so that a plain command does not import it."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    add_completers(parser)
    # options once a word starts with -, as git's completion; any other positional completes as files
    finder()(parser, always_complete_options=False, default_completer=files_completer())


def finder():
    """argcomplete's ``CompletionFinder``, which also offers the dotted keys where a command's overrides come
    after its options (``peftlab train c.yaml --run-dir d train.l``: argparse has closed the overrides
    positional by then, and ``cli.parsing.parse_command_line`` takes them back)."""
    import argcomplete

    class Finder(argcomplete.CompletionFinder):
        def collect_completions(self, active_parsers, parsed_args, cword_prefix):
            completions = super().collect_completions(active_parsers, parsed_args, cword_prefix)
            parser = active_parsers[-1]  # the subcommand's; nothing awaits a value (an option's, a positional)
            takes_overrides = any(action.dest == "overrides" for action in parser._actions)
            if takes_overrides and not parser.active_actions and not cword_prefix.startswith("-"):
                completions += complete_override(cword_prefix)
            return completions

        def quote_completions(self, completions, cword_prequote, last_wordbreak_pos):
            plain = [c for c in completions if c.isprintable()]
            controls = [c for c in completions if not c.isprintable()] if cword_prequote == "" else []
            words = [word for word in map(quoted_control, controls) if word is not None]
            self._display_completions.update(dict.fromkeys(words, ""))  # zsh's word:description, no description
            append_space = self.append_space
            self.append_space = append_space and not words  # the space after a lone candidate only
            try:
                return super().quote_completions(plain, cword_prequote, last_wordbreak_pos) + words
            finally:
                self.append_space = append_space

    return Finder()


def quoted_control(name: str) -> str | None:
    """A candidate holding a control or bidi character (a file named with a newline, an escape sequence) as one word
    the shell reads back as the name: offered raw, bash would split it at the newline or the terminal run the escape
    when listing it. bash: ANSI-C quoted, ``$'a\\nb'``. zsh: as it is (its ``_describe`` quotes what it inserts,
    and lists a control character as ``^[``), a colon escaped (``_describe``'s ``word:description``). fish reads
    no such word: not offered there (``None``, dropped)."""
    shell = os.environ.get("_ARGCOMPLETE_SHELL")
    if shell == "zsh":
        return name.replace(":", "\\:")
    if shell in ("fish", "tcsh", "powershell"):
        return None
    codes = {"\n": "\\n", "\t": "\\t", "\\": "\\\\", "'": "\\'"}
    return "$'" + "".join(codes.get(c) or (c if c.isprintable() else ansi_c_code(c)) for c in name) + "'"


def ansi_c_code(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def add_completers(parser: argparse.ArgumentParser) -> None:
    """Give each positional argument of ``parser`` and its subcommands the completer its name calls for
    (``COMPLETERS``), by its name: set here rather than beside each ``add_argument``, so that the parser of a
    plain command neither imports argcomplete nor builds a completer."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in set(action.choices.values()):
                add_completers(subparser)
        elif not action.option_strings and action.dest in COMPLETERS:
            action.completer = COMPLETERS[action.dest]()


def config_files():
    return files_completer((".yaml", ".yml"))


def files_completer(suffixes: tuple[str, ...] = ()):
    """The names under the typed word's folder that start with its last part: folders (with their ``/``) and files
    (those ending in ``suffixes``, when given). Listed here, not by ``compgen`` as argcomplete's FilesCompleter
    lists them: its output is a line a name, so a name holding a newline came back as two."""

    def complete_files(prefix: str, **_) -> list[str]:
        folder, start = os.path.split(os.path.expanduser(prefix))
        try:
            with os.scandir(folder or ".") as entries:
                found = [(entry.name, entry.is_dir()) for entry in entries if entry.name.startswith(start)]
        except OSError:
            return []
        shown = prefix[: len(prefix) - len(start)]  # the folder as typed (~ kept)
        return sorted(
            shown + name + ("/" if is_dir else "")
            for name, is_dir in found
            if is_dir or not suffixes or name.endswith(suffixes)
        )

    return complete_files


def directories():
    from argcomplete import DirectoriesCompleter

    return DirectoriesCompleter()


def overrides():
    return complete_override


def complete_override(prefix: str, **_) -> list[str]:
    """The dotted keys that start with ``prefix``, each with its ``=`` (so the shell adds no space); after the
    ``=``, the values of a key whose type is a fixed set (a Literal, a bool, a method's name)."""
    from peftlab.study.keys import config_keys

    key, equals, _ = prefix.partition("=")
    if not equals:
        return [f"{k}=" for k in sorted(config_keys()) if k.startswith(prefix)]
    return [f"{key}={value}" for value in key_values(key)]


def key_values(key: str) -> list[str]:
    """What dotted ``key`` can take where its type says (``[]`` for a number, a string, a path)."""
    from peftlab.config.methods import method_config_class, method_names
    from peftlab.config.schema import RunConfig

    if key == "method.name":
        return list(method_names())
    section, _, name = key.rpartition(".")
    if section == "method":
        classes = [method_config_class(m) for m in method_names()]
    elif section:
        classes = [typing.get_type_hints(RunConfig).get(section)]
    else:
        classes = [RunConfig]
    values: list[str] = []
    for cls in classes:
        hint = typing.get_type_hints(cls).get(name) if isinstance(cls, type) else None
        values += [v for v in type_values(hint) if v not in values]
    return [] if values == ["null"] else values  # an optional number or string: nothing to offer


def type_values(hint) -> list[str]:
    """The values a YAML scalar of type ``hint`` can take, written as an override writes them."""
    if hint is bool:
        return ["true", "false"]
    if hint is type(None):
        return ["null"]
    if typing.get_origin(hint) is typing.Literal:
        return [str(v) for v in typing.get_args(hint)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [v for member in typing.get_args(hint) for v in type_values(member)]
    return []


# A positional argument's name -> its completer (what ``add_completers`` gives it); the others complete as
# files (``files_completer``), their choices where they have them.
COMPLETERS = {
    "config": config_files,
    "study": config_files,
    "overrides": overrides,
    "run_dir": directories,
    "run_dirs": directories,
    "study_dir": directories,
}
