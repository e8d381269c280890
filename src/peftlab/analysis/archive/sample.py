"""Which archived runs ``peftlab reproduce`` reruns, drawn so that whoever packed the archive cannot predict them.

The default (``--runs one-seed``) reruns one seed of each configuration, drawn from a seed the receiver controls:
random by default (``secrets``), recorded in reproduce.json and the last lines, ``--sample-seed N`` to draw the same
runs again. A forger who edits the one seed a fixed rule reruns (the first) is caught with the probability that
seed is drawn; a forger who edits every seed is caught by any rerun. ``--runs N`` draws one seed of each
configuration first, then the others, in the drawn order; ``--runs all`` reruns every completed run.
"""

from __future__ import annotations

import random
import secrets

from peftlab.utils.errors import UserError


def sample_seed(given: int | str | None) -> int:
    """The seed of the draw: ``given`` (``--sample-seed``) as an integer in [0, 2**63), else a fresh random one."""
    if given is None:
        return secrets.randbits(63)
    try:
        seed = int(given)
    except (TypeError, ValueError):
        raise UserError(f"--sample-seed {given!r} is invalid: expected a whole number from 0 to 2**63-1") from None
    if not 0 <= seed < 2**63:
        raise UserError(f"--sample-seed {given!r} is invalid: expected a whole number from 0 to 2**63-1")
    return seed


def draw(runs: list[dict], which: str, seed: int) -> list[dict]:
    """The completed runs to rerun (``runs``: ``received.archived_runs``' records, in the study's order): ``all``,
    ``one-seed`` (one seed of each configuration, drawn) or a count N (the drawn seed of each configuration first,
    then the other seeds in a drawn order; 0 reruns none). The draw depends on ``seed`` and on the runs' labels
    and seeds only, never on the order of the files."""
    done = [run for run in runs if run["result"].get("status") == "completed"]
    if which == "all":
        return done
    count = rerun_count(which)
    rng = random.Random(seed)
    by_variant: dict[str, list[dict]] = {}
    for run in sorted(done, key=lambda r: (str(r["variant"]), str(r["seed"]))):
        by_variant.setdefault(str(run["variant"]), []).append(run)
    firsts, rest = [], []
    for variant in sorted(by_variant):
        seeds = by_variant[variant][:]
        rng.shuffle(seeds)
        firsts.append(seeds[0])
        rest += seeds[1:]
    rng.shuffle(rest)
    order = {id(run): n for n, run in enumerate(done)}
    firsts.sort(key=lambda run: order[id(run)])  # the study's order, as the reruns print
    if count is None:
        return firsts
    return (firsts + rest)[:count]


def rerun_count(which: str) -> int | None:
    """``--runs``' count of runs (None: ``all`` or ``one-seed``); anything else is one line."""
    if which in ("all", "one-seed"):
        return None
    if not (which.isascii() and which.isdigit()):
        raise UserError(f"--runs {which!r} is invalid: expected all, one-seed or a count of runs (0 reruns none)")
    return int(which)


def trials_need_runs(which: str, trials: bool) -> None:
    """``--trials`` with ``--runs 0`` is refused: the searches are rerun with the final runs they choose."""
    if trials and rerun_count(which) == 0:
        raise UserError(
            "--trials with --runs 0 would rerun nothing: the searches are rerun with the final runs they choose, "
            "so give --runs N, one-seed or all (--runs 0 checks the archive only)"
        )
