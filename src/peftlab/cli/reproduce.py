"""``peftlab reproduce``: a received submission checked and rerun (analysis/archive/reproduce.py)."""

from __future__ import annotations


def add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="check a submission archive and rerun its runs: reproduced, or which runs differ and by how much",
    )
    p.add_argument("archive", help="a submission archive (.tar.gz of `peftlab submission`) or its unpacked folder")
    p.add_argument(
        "--runs",
        default="one-seed",
        help="which archived runs to rerun: all (and recompute the paper's claims from them), one-seed (default: "
        "one seed of every configuration, drawn from --sample-seed) or a count N (one drawn seed of each "
        "configuration first; 0 checks the archive without rerunning)",
    )
    p.add_argument(
        "--sample-seed",
        help="the seed that draws which seed of each configuration is rerun (default: a random one, printed and "
        "recorded in reproduce.json; give it to draw the same runs again)",
    )
    p.add_argument(
        "--trials",
        action="store_true",
        help="rerun the tuning searches of the drawn runs' configurations too and compare each choice (not with "
        "--runs 0; default: the tuning taken as recorded)",
    )
    p.add_argument("--out", help="where to unpack and rerun (default ./<archive name>-reproduced)")
    p.add_argument(
        "--data",
        help="a folder that holds datasets the archive does not pack, each as <name> for the archive's data/<name> "
        "or for a dataset the configs name (fashion_mnist, mnist): checked against their recorded SHA-256 and read "
        "by the reruns (default: the archive's data/, and where peftlab finds a dataset by its name)",
    )
    p.add_argument(
        "--run-archive-code",
        nargs="?",
        const=True,
        default=False,
        type=consent_hash,
        metavar="HASH",
        help="allow the reruns to import the archive's plugin code (its declared packages alone, from a folder of "
        "their own); =HASH: only if the files listed before anything is imported (OUT/plugin-code.txt) hash to a "
        "SHA-256 that starts with HASH (12 to 64 hex digits, as printed: `archive code SHA-256: ...`); without it a "
        "rerun that needs that code stops first and names what would run",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_reproduce)


def consent_hash(text: str) -> str:
    """``--run-archive-code``'s value as argparse takes it: the hex digits, or argparse's one-line error."""
    import argparse

    from peftlab.analysis.archive.plugins import consent_hash as checked
    from peftlab.utils.errors import UserError

    try:
        return checked(text)
    except UserError:
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is invalid: expected the first 12 to 64 hex digits of the archive code's SHA-256 that "
            "reproduce prints (`archive code SHA-256: ...`), or no value (the archive named before the option)"
        ) from None


def cmd_reproduce(args) -> int:
    from peftlab.analysis.archive.reproduce import reproduce
    from peftlab.cli.terminal import printable

    def say(line: str) -> None:
        print(printable(line), flush=True)  # every line holds the archive's texts: escapes shown, never sent

    return reproduce(
        args.archive,
        runs=args.runs,
        out=args.out,
        progress=not args.quiet,
        say=say,
        data=args.data,
        run_archive_code=args.run_archive_code,
        sample_seed=args.sample_seed,
        trials=args.trials,
    )
