"""A damaged tuning journal is set aside with one warning and the search goes on from its trials'
run directories: nothing finished is trained again, and the choice is the undamaged search's."""

import json
import logging
import random

import pytest
import yaml
from testkit import TINY_MODEL, needs_fashion_mnist, run_cli

from peftlab.study.journal import journal_damage, open_journal

# Each damage: the bytes it leaves, from the journal's bytes
DAMAGES = {
    "last 30 bytes cut": lambda raw: raw[:-30],
    "a garbage line": lambda raw: raw + b"garbage{\n",
    "an empty line": lambda raw: raw + b"\n",
    "a JSON list": lambda raw: raw + b"[1, 2]\n",
    "an unknown op_code": lambda raw: raw + b'{"op_code": 99, "worker_id": "x"}\n',
    "no op_code": lambda raw: raw + b'{"trial_id": 0}\n',
    "a trial without its fields": lambda raw: raw + b'{"op_code": 4, "worker_id": "x", "study_id": 0}\n',
    "bytes that are not UTF-8": lambda raw: raw + b"\xff\xfe\n",
    "nesting too deep": lambda raw: raw + b"[" * 100_000 + b"]" * 100_000 + b"\n",
}


# A search of two trials on a tiny run, its final run on one seed: the study the damage is done to
BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
    "method": {"name": "lora", "r": 2},
    "train": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "threads": 1},
}
STUDY = {
    "name": "s",
    "base": "base.yaml",
    "seeds": 1,
    "methods": {"lora": {}},
    "tune": {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"},
}
# Journals that replay but are not the search's (trial 1, at lr 1e-2, is the best: its run scores 0.75)
DISAGREEMENTS = {
    "a score that is not its runs'": lambda raw: raw.replace(b'"values":[0.75]', b'"values":[0.05]'),
    "values that are not the proposal": lambda raw: raw.replace(
        b'"param_value_internal":1', b'"param_value_internal":0'
    ),
    "a completed trial failed": lambda raw: raw.replace(b'"state":1,"values":[0.75]', b'"state":3,"values":null'),
    "a grid trial pruned": lambda raw: raw.replace(b'"state":1,"values":[0.75]', b'"state":2,"values":null'),
    "a trial beyond the budget": lambda raw: raw + raw.splitlines(keepends=True)[2],
}
SCORES = {1e-3: 0.25, 1e-2: 0.75}  # val_top1 of a trial's run, by its learning rate


def make_journal(path, trials: int = 2):
    """A journal of a finished search of ``trials`` trials, as a search writes one."""
    from peftlab.study.search import optuna_module

    optuna = optuna_module()
    study = optuna.create_study(
        study_name="lora", storage=open_journal(path), direction="maximize", load_if_exists=True
    )
    for number in range(trials):
        study.enqueue_trial({"train.lr": 10.0 ** -(number + 2)})
        trial = study.ask({"train.lr": optuna.distributions.CategoricalDistribution([1e-2, 1e-3, 1e-4])})
        trial.set_user_attr("run_ids", [f"run{number}"])
        study.tell(trial, 0.5 + number / 10)
    return path.read_bytes()


def warned(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def trials_in(path):
    from peftlab.study.search import optuna_module

    return optuna_module().create_study(study_name="lora", storage=open_journal(path), load_if_exists=True).trials


def test_an_intact_empty_or_missing_journal_is_used_as_it_is(tmp_path, caplog):
    path = tmp_path / "search-x.journal"
    assert journal_damage(path) is None and not path.exists()
    make_journal(path)
    path.with_name("empty.journal").write_bytes(b"")
    assert len(trials_in(path)) == 2
    assert journal_damage(path.with_name("empty.journal")) is None
    assert not warned(caplog) and sorted(p.name for p in tmp_path.iterdir()) == ["empty.journal", "search-x.journal"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_journal_is_set_aside_with_one_warning(tmp_path, caplog, damage):
    path = tmp_path / "search-x.journal"
    damaged = DAMAGES[damage](make_journal(path))
    path.write_bytes(damaged)
    assert trials_in(path) == []  # a fresh journal: the search asks its trials again
    (line,) = warned(caplog)
    assert line.startswith(f"the tuning journal {path} is damaged (") and "\n" not in line
    assert "moved to search-x.journal.damaged-1" in line
    assert (tmp_path / "search-x.journal.damaged-1").read_bytes() == damaged  # kept as it was, for a look
    caplog.clear()
    make_journal(path)  # the fresh journal takes appends and reads back
    path.write_bytes(damaged)  # damaged again: the next free name
    assert trials_in(path) == []
    assert (tmp_path / "search-x.journal.damaged-2").read_bytes() == damaged and len(warned(caplog)) == 1


def tiny_search(tmp_path):
    from peftlab.study.spec import load_study

    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    return load_study(tmp_path / "study.yaml").tune["lora"]


def fake_jobs(trained: list):
    """``run_jobs`` of a search whose runs complete at once with ``SCORES`` (``trained`` lists them)."""
    from peftlab.utils.files import write_json_atomic

    def run_jobs(jobs, on_done, stop_when=None):
        for spec, run_dir in jobs:
            result = {"status": "completed", "metrics": {"val_top1": SCORES[spec.config.train.lr]}}
            write_json_atomic(run_dir / "result.json", result)
            trained.append(spec.run_id)
            on_done(spec, result)

    return run_jobs


@pytest.mark.parametrize("damage", [*DAMAGES, *DISAGREEMENTS])
def test_a_search_on_a_damaged_journal_trains_nothing_again_and_chooses_as_before(tmp_path, caplog, damage):
    from peftlab.study.search import journal_path, run_search

    search, directory, trained = tiny_search(tmp_path), tmp_path / "tune" / "lora", []
    chosen = run_search(search, directory, fake_jobs(trained), slots=1)
    assert chosen["params"] == {"train.lr": 1e-2} and len(trained) == 2
    selection = (directory / "selection.json").read_text()
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.glob("runs/*/result.json")}
    journal = journal_path(directory, search)
    damaged = {**DAMAGES, **DISAGREEMENTS}[damage](journal.read_bytes())
    assert damaged != journal.read_bytes()
    journal.write_bytes(damaged)
    caplog.clear()

    assert run_search(search, directory, fake_jobs(trained), slots=1) == chosen
    assert len(trained) == 2, "a finished trial was trained again"
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.glob("runs/*/result.json")} == before
    assert (directory / "selection.json").read_text() == selection
    (line,) = warned(caplog)
    assert line.startswith(f"the tuning journal {journal} is damaged (") and journal_damage(journal) is None


def test_fuzzed_journals_never_stop_a_search_nor_change_its_choice(tmp_path, caplog):
    """Bytes flipped, the journal cut anywhere, part of a line inserted, its last lines lost (a fixed
    seed, a bounded count): the search goes on with at most one warning, trains nothing again and
    chooses as before."""
    from peftlab.study.search import journal_path, run_search

    rng, trained, set_aside = random.Random(37), [], 0
    search, directory = tiny_search(tmp_path), tmp_path / "tune" / "lora"
    chosen = run_search(search, directory, fake_jobs(trained), slots=1)
    journal = journal_path(directory, search)
    intact = journal.read_bytes()
    for case in range(60):
        raw, lines = bytearray(intact), intact.splitlines(keepends=True)
        if case % 4 == 0:
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif case % 4 == 1:
            raw = raw[: rng.randrange(len(raw))]
        elif case % 4 == 2:
            lines.insert(rng.randrange(len(lines)), rng.choice(lines)[: rng.randrange(1, 80)])
            raw = b"".join(lines)
        else:  # whole lines lost (a search killed between two writes): no damage, the search resumes
            raw = b"".join(lines[: rng.randrange(len(lines))])
        journal.write_bytes(bytes(raw))
        caplog.clear()
        assert run_search(search, directory, fake_jobs(trained), slots=1) == chosen, (case, bytes(raw))
        assert len(trained) == 2 and len(warned(caplog)) <= 1, case
        assert journal_damage(journal) is None, case
        set_aside += len(warned(caplog))
        for aside in directory.glob("*.damaged-*"):
            aside.unlink()
    assert 30 <= set_aside < 60, set_aside  # both: journals set aside, and journals resumed as they are


def results(out):
    """Every result.json of the study (trials and final runs): its bytes and mtime."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("**/result.json")}


@pytest.mark.e2e
@needs_fashion_mnist()
def test_a_study_with_a_cut_journal_goes_on_without_training_again(tmp_path):
    """Real runs through the CLI: the journal's last 30 bytes cut (the re-run used to append after the
    cut line, and every later run crashed); the other damages go the same way (the tests above)."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "out"
    proc = run_cli("study", str(tmp_path / "study.yaml"), "--study-dir", str(out), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (journal,) = out.glob("tune/lora/search-*.journal")
    journal.write_bytes(DAMAGES["last 30 bytes cut"](journal.read_bytes()))
    before, selection = results(out), json.loads((out / "tune" / "lora" / "selection.json").read_text())
    assert len(before) == 3  # two trials and the final run

    for first in (True, False):  # the first call sets the damaged journal aside, the next finds the fresh one
        proc = run_cli("study", str(tmp_path / "study.yaml"), "--study-dir", str(out), "--quiet", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        if first:
            (line,) = proc.stderr.splitlines()
            assert line.startswith(f"peftlab: warning: the tuning journal {journal} is damaged ("), line
        else:
            assert proc.stderr == ""
        assert "1 completed, 0 failed, 0 diverged of 1 runs (1 were already finished)" in proc.stdout
        assert results(out) == before  # no trial or final run trained again, nor its result rewritten
        again = json.loads((out / "tune" / "lora" / "selection.json").read_text())
        assert again["chosen"] == selection["chosen"] and again["done"]
        assert [(t["number"], t["state"], t["value"], t["run_ids"]) for t in again["trials"]] == [
            (t["number"], t["state"], t["value"], t["run_ids"]) for t in selection["trials"]
        ]
    assert journal.with_name(journal.name + ".damaged-1").is_file() and journal_damage(journal) is None
