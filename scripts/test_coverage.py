"""Lines of src/peftlab that one coverage run covered and another did not (issue 88: a cut of the suite must
not lower the coverage). Reads two ``coverage.json`` files of ``scripts/test_coverage.sh``:

    python scripts/test_coverage.py BEFORE/coverage.json AFTER/coverage.json

prints both totals and, per file, the lines covered before and not after (a module's path relative to the
package, so two clones compare); exits 1 when the total fell.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def covered(path: Path) -> tuple[dict[str, set[int]], float]:
    data = json.loads(path.read_text())
    lines = {}
    for name, entry in data["files"].items():
        key = name[name.rindex("peftlab/") :] if "peftlab/" in name else name
        lines[key] = set(entry["executed_lines"])
    return lines, data["totals"]["percent_covered"]


def main(before: str, after: str) -> int:
    old, old_total = covered(Path(before))
    new, new_total = covered(Path(after))
    print(f"before: {old_total:.2f}% of lines    after: {new_total:.2f}%")
    lost = {name: sorted(lines - new.get(name, set())) for name, lines in old.items()}
    for name, lines in sorted(lost.items()):
        if lines:
            print(f"  {name}: {len(lines)} lines covered before, not after: {lines[:20]}")
    return 1 if new_total < old_total else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
