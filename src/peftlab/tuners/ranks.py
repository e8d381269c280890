"""Rank allocation: pure functions from per-module weights to integer ranks (no torch).

Every allocation returns one integer rank per module, each within [min_rank, max_rank], and
their sum never exceeds the budget (it equals the budget whenever the bounds allow it). The
static strategies of LoRA (``method.rank_strategy``) and the importance controllers of the
``adaptive`` method share these functions, so "equal budget" means the same thing in both.

Module names are those of the adapted modules (``blocks.3.attn.qkv.v``, HF's
``vit.encoder.layer.3.attention.attention.value`` style names and GPT-2's ``transformer.h.3.attn.c_attn.q``
also work): the block index is the number after ``blocks.`` / ``layer.`` / ``layers.`` / ``h.`` (Swin's
``layers.S.blocks.M`` counted across its stages), the module type the last name part (GPT-2's Conv1D
names read as their roles: c_attn qkv, attn.c_proj proj, mlp.c_fc fc1, mlp.c_proj fc2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from peftlab.models.blocks import block_indices
from peftlab.utils.errors import ConfigError

STATIC_STRATEGIES = ("uniform", "linear_decay", "linear_increase", "attention_heavy", "empirical")
ATTENTION_PARTS = {"q", "k", "v", "qkv", "proj", "q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value"}


ROLES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "proj", "query": "q", "key": "k", "value": "v"}
# GPT-2's Conv1D layers: c_proj is the attention output in attn and the second MLP layer in mlp
GPT2_ROLES = {"attn.c_attn": "qkv", "attn.c_proj": "proj", "mlp.c_fc": "fc1", "mlp.c_proj": "fc2"}


def module_type(name: str) -> str:
    """The module's role within its block: q, k, v, qkv, proj, fc1, fc2 (or the last name part)."""
    parent, _, last = name.rpartition(".")
    gpt2 = GPT2_ROLES.get(parent.rpartition(".")[2] + "." + last)
    return gpt2 or ROLES.get(last, last)


def check_budget(budget: int, n: int, min_rank: int, max_rank: int, field: str) -> None:
    if budget < n * min_rank:
        raise ConfigError(f"{field}={budget} is below min_rank x adapted modules = {min_rank} x {n} = {n * min_rank}")
    if max_rank < min_rank:
        raise ConfigError(f"method.max_rank={max_rank} is below method.min_rank={min_rank}")


def proportional(weights: list[float], budget: int, min_rank: int, max_rank: int) -> list[int]:
    """Ranks proportional to ``weights`` within [min_rank, max_rank], summing to the budget.

    The real-valued ranks are clamp(c·w, min_rank, max_rank) with the c that makes them sum to
    the budget (found by bisection: the sum grows with c); their floors are then topped up by
    one, largest fractional part first (ties to the earlier module). Equal weights give equal
    ranks up to the remainder; zero weights get min_rank.
    """
    n = len(weights)
    if n == 0:
        return []
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"rank weights must be finite and >= 0, got {weights}")
    budget = max(n * min_rank, min(budget, n * max_rank))
    if sum(weights) <= 0:  # no information: uniform
        weights = [1.0] * n
    zeros = [i for i, w in enumerate(weights) if w == 0]
    if zeros and budget > (n - len(zeros)) * max_rank + len(zeros) * min_rank:
        # every weighted module is at max_rank: the unweighted ones share what is left
        rest = iter(proportional([1.0] * len(zeros), budget - (n - len(zeros)) * max_rank, min_rank, max_rank))
        return [next(rest) if w == 0 else max_rank for w in weights]

    def shares(c: float) -> list[float]:
        return [min(max_rank, max(min_rank, c * w)) for w in weights]

    low, high = 0.0, max_rank / min(w for w in weights if w > 0)
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if sum(shares(mid)) < budget else (low, mid)
    target = shares(high)
    ranks = [min(max_rank, int(math.floor(t + 1e-9))) for t in target]
    remainder = budget - sum(ranks)
    order = sorted(range(n), key=lambda i: (-(target[i] - ranks[i]), i))
    for i in order:
        if remainder <= 0:
            break
        if ranks[i] < max_rank:
            ranks[i] += 1
            remainder -= 1
    return ranks


def threshold(importance: list[float], budget: int, min_rank: int, max_rank: int, quantile: float) -> list[int]:
    """Modules whose importance is below the ``quantile`` of all modules drop to min_rank; the
    rank they free goes, in equal parts, to the modules at or above it (up to max_rank)."""
    n = len(importance)
    if n == 0:
        return []
    cut = sorted(importance)[min(n - 1, int(math.floor(quantile * n)))]
    low = [x < cut for x in importance]
    if not any(low):
        return proportional([1.0] * n, budget, min_rank, max_rank)
    high_weights = [0.0 if is_low else 1.0 for is_low in low]
    n_low = sum(low)
    rest = proportional([w for w in high_weights if w], budget - n_low * min_rank, min_rank, max_rank)
    it = iter(rest)
    return [min_rank if is_low else next(it) for is_low in low]


def top_k(importance: list[float], budget: int, min_rank: int, max_rank: int, k: int | None = None) -> list[int]:
    """The k most important modules get max_rank, the others min_rank.

    k defaults to the largest that fits the budget; what the budget holds beyond k x max_rank
    goes to the next module in importance, so the sum equals the budget. Modules tied at the
    k-th importance share what is left for them equally, so equal importance everywhere gives
    uniform ranks.
    """
    n = len(importance)
    if n == 0:
        return []
    fit = (budget - n * min_rank) // max(1, max_rank - min_rank) if max_rank > min_rank else n
    k = min(n, fit if k is None else min(k, fit))
    if k <= 0:
        return [min_rank] * n
    kth = sorted(importance, reverse=True)[k - 1]
    above = [x > kth for x in importance]
    tied = [i for i, x in enumerate(importance) if x == kth]
    ranks = [max_rank if a else min_rank for a in above]
    left = budget - sum(ranks[i] for i in range(n) if i not in tied)
    shared = proportional([1.0] * len(tied), left, min_rank, max_rank)
    for i, rank in zip(tied, shared):
        ranks[i] = rank
    left = budget - sum(ranks)
    for i in sorted(range(n), key=lambda i: (-importance[i], i)):  # the rest to the next in line
        extra = min(left, max_rank - ranks[i])
        ranks[i] += max(0, extra)
        left -= max(0, extra)
    return ranks


def static_weights(strategy: str, modules: list[str], importance: dict[str, float] | None = None) -> list[float]:
    """Per-module weights of a static strategy (``proportional`` turns them into ranks)."""
    blocks = block_indices(modules)
    depth = max(blocks) + 1 if blocks else 1
    if strategy == "uniform":
        return [1.0] * len(modules)
    if strategy == "linear_decay":  # the first block gets the most rank, the last the least
        return [float(depth - b) for b in blocks]
    if strategy == "linear_increase":
        return [float(b + 1) for b in blocks]
    if strategy == "attention_heavy":  # attention projections count twice the MLP's
        return [2.0 if module_type(m) in ATTENTION_PARTS else 1.0 for m in modules]
    if strategy == "empirical":
        missing = [m for m in modules if importance is None or m not in importance]
        if missing:
            raise ConfigError(
                f"method.importance_from has no importance for adapted module {missing[0]!r} "
                f"({len(missing)} of {len(modules)} missing); it must come from a run with the same targets"
            )
        return [max(0.0, float(importance[m])) for m in modules]
    raise ConfigError(f"method.rank_strategy={strategy!r} is invalid; expected one of {', '.join(STATIC_STRATEGIES)}")


def static_ranks(
    strategy: str,
    modules: list[str],
    budget: int,
    min_rank: int,
    max_rank: int,
    importance: dict[str, float] | None = None,
) -> dict[str, int]:
    """The rank of every adapted module under a static strategy: ``{module: rank}``."""
    check_budget(budget, len(modules), min_rank, max_rank, "method.rank_budget")
    ranks = proportional(static_weights(strategy, modules, importance), budget, min_rank, max_rank)
    return dict(zip(modules, ranks))


def read_importance(path: str | Path) -> dict[str, float]:
    """Mean importance per module from a run's ``importance.jsonl`` (or the run directory).

    The mean is over the records of the run's last reallocation, i.e. its final estimate.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "importance.jsonl"
    if not path.is_file():
        raise ConfigError(
            f"method.importance_from: {path} does not exist; point it at a run directory of an "
            "adaptive or adalora run (it writes importance.jsonl) or at the file itself"
        )
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"method.importance_from: {path} line {number} is not JSON") from None
        if isinstance(record, dict) and record.get("kind", "rank") == "rank":
            records.append(record)
    if not records:
        raise ConfigError(f"method.importance_from: {path} holds no importance records")
    last = max(int(r.get("step", 0)) for r in records)
    final = {}
    for record in records:
        if int(record.get("step", 0)) == last and isinstance(record.get("importance"), (int, float)):
            final[str(record["module"])] = float(record["importance"])
    return final
