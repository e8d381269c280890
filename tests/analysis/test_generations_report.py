"""The report's "Generations" section (issue 89): each configuration's greedy replies to the same validation
prompts, from its lowest seed's run, escaped as Markdown; a damaged generations.jsonl left out. No torch: the
study of ``studyfiles`` with generations.jsonl files shaped as ``peftlab.training.evaluate.generations`` writes them;
and the paper's words on a dialogue task, from the runs' record of its manifest."""

from __future__ import annotations

import json

from studyfiles import write_study_dir

from peftlab.analysis.results.generations import report_section


def write_generations(run_dir, replies, stopped="eos"):
    rows = [
        {"index": i, "prompt": f"turn {i} *bold*", "reference": f"reference {i}", "reply": reply, "new_tokens": 3}
        | {"stopped": stopped}
        for i, reply in enumerate(replies)
    ]
    (run_dir / "generations.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_the_section_shows_each_prompt_once_and_each_configuration_s_first_seed_reply(tmp_path):
    study = write_study_dir(tmp_path / "study", with_failure=False)
    runs = tmp_path / "study" / "runs"
    assert report_section(study) == []  # no run wrote generations: no section
    write_generations(runs / "lorar8-s1", ["eight one", "eight one again"], stopped="max_new_tokens")
    write_generations(runs / "lorar8-s2", ["eight two", "eight two again"])
    write_generations(runs / "lorar4-s0", ["four zero <b>", "four zero again"])
    (runs / "full-s0" / "generations.jsonl").write_text('{"index": 0, "prompt": "half a row"}\n')  # damaged
    lines = report_section(study, labels={"lora": "LoRA"})
    assert lines[:3] == ["## Generations", "", lines[2]]
    assert "first 2 validation prompts" in lines[2] and "of seed 0, 1" in lines[2]
    prompt = lines.index("**Prompt 1.** turn 0 \\*bold\\*")
    assert lines[prompt + 2 : prompt + 5] == [
        "- reference: reference 0",
        "- LoRA r=4: four zero \\<b\\>",  # seed 0 of lora r=4, Markdown escaped
        "- LoRA r=8: eight one (stopped at its token limit)",  # seed 1, the lowest of lora r=8 with generations
    ]
    assert sum(line.startswith("**Prompt") for line in lines) == 2 and "half a row" not in "\n".join(lines)


def test_the_paper_says_a_dialogue_task_from_the_runs_records():
    import pandas as pd

    from peftlab.analysis.paper.names import text_task

    runs = pd.DataFrame(
        {"data.task": ["fortunes-dialogue"] * 2, "data.task_categories": ['["science", "men_women"]'] * 2}
    )
    assert text_task(runs) == (
        "a dialogue task: the first sentence of a quote of Debian's fortunes (categories science and men\\_women) as "
        "the user's turn, the rest of it as the reply"
    )
