"""One call of `peftlab study --workers 2` on benchmarks/side-by-side/study.yaml into STUDY_DIR: its
searches side by side (mode ``side``, what peftlab does) or one after another (mode ``sequential``, as
before); prints the call's phases.jsonl lines."""

import sys
from pathlib import Path


def run(mode: str, study_dir: str) -> int:
    import peftlab.study.runner as runner
    from peftlab.cli import main

    if mode == "sequential":
        tune_study = runner.tune_study
        runner.tune_study = lambda *args, **kwargs: tune_study(*args, **{**kwargs, "side_by_side": False})
    study = Path(__file__).parent / "study.yaml"
    code = main(["study", str(study), "--study-dir", study_dir, "--workers", "2", "--quiet"])
    for line in (Path(study_dir) / "phases.jsonl").read_text().splitlines():
        print(mode, line)
    return code


if __name__ == "__main__":  # the forkserver imports this module again: nothing runs on import
    sys.exit(run(sys.argv[1], sys.argv[2]))
