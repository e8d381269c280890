"""The ``health`` section of result.json, from the run's monitor records (plain Python: no torch).

Verdict: ``unstable`` when the run diverged (a non-finite loss or gradient) or gradients
exploded at ``unstable_after`` or more log points; ``warnings`` when any flag was raised;
``stable`` otherwise.
"""

from __future__ import annotations

FLAGS = ("exploding", "vanishing")


def health(records: list[dict], diverged: bool = False, unstable_after: int = 3) -> dict:
    monitors = [r for r in records if r.get("kind") == "monitors"]
    counts = dict.fromkeys(FLAGS, 0)
    first_step: dict[str, int | None] = dict.fromkeys(FLAGS, None)
    points: dict[str, set] = {flag: set() for flag in FLAGS}
    groups: dict[str, dict[str, int]] = {flag: {} for flag in FLAGS}
    for record in monitors:
        for flag in record.get("flags") or []:
            kind = flag["flag"]
            counts[kind] += 1
            points[kind].add(record["step"])
            groups[kind][flag["group"]] = groups[kind].get(flag["group"], 0) + 1
            if first_step[kind] is None or record["step"] < first_step[kind]:
                first_step[kind] = record["step"]
    if diverged or len(points["exploding"]) >= unstable_after:
        verdict = "unstable"
    elif any(counts.values()):
        verdict = "warnings"
    else:
        verdict = "stable"
    return {
        "verdict": verdict,
        "diverged": diverged,
        "log_points": len(monitors),
        "counts": counts,
        "log_points_flagged": {k: len(v) for k, v in points.items()},
        "first_step": first_step,
        "groups": {k: dict(sorted(v.items(), key=lambda kv: -kv[1])[:5]) for k, v in groups.items()},
    }
