"""tests/tiers.py: the full tier's shards split it, about evenly, and the shard `make test` runs is the commit's."""

import pytest
import tiers


def test_the_shards_split_the_full_tier_about_evenly():
    shards = tiers.shards()
    assert len(shards) == tiers.SHARDS and set().union(*shards) == set(tiers.FULL)
    assert sum(map(len, shards)) == len(tiers.FULL)  # no case in two shards
    seconds = [sum(tiers.FULL[nodeid][0] for nodeid in shard) for shard in shards]
    assert max(seconds) - min(seconds) <= max(s for s, _ in tiers.FULL.values())


def test_every_full_case_names_the_kept_test_on_its_path():
    assert all(seconds > 0 and reason for seconds, reason in tiers.FULL.values())
    assert all(nodeid.startswith("tests/") and "::test_" in nodeid for nodeid in tiers.FULL)


def test_the_shard_is_the_commits_unless_one_is_asked_for(monkeypatch, tmp_path):
    monkeypatch.delenv(tiers.ENV_SHARD, raising=False)
    monkeypatch.setattr(tiers, "commit", lambda repo: "0000000b" + "0" * 32)
    assert tiers.chosen_shard(tmp_path) == 11 % tiers.SHARDS
    assert tiers.left_out(tmp_path) == set(tiers.FULL) - tiers.shards()[11 % tiers.SHARDS]
    monkeypatch.setattr(tiers, "commit", lambda repo: None)  # not a git checkout
    assert tiers.chosen_shard(tmp_path) == 0
    monkeypatch.setenv(tiers.ENV_SHARD, "all")
    assert tiers.chosen_shard(tmp_path) is None and tiers.left_out(tmp_path) == set()
    monkeypatch.setenv(tiers.ENV_SHARD, "3")
    assert tiers.chosen_shard(tmp_path) == 3
    for bad in (str(tiers.SHARDS), "-1", "x"):
        monkeypatch.setenv(tiers.ENV_SHARD, bad)
        with pytest.raises(ValueError, match="PEFTLAB_TEST_SHARD"):
            tiers.chosen_shard(tmp_path)


def test_outside_a_git_checkout_there_is_no_commit(tmp_path):
    assert tiers.commit(tmp_path) is None


def test_only_the_tests_folder_or_one_above_it_is_the_whole_suite(tmp_path):
    tests = tmp_path / "tests"
    (tests / "data").mkdir(parents=True)
    (tests / "test_x.py").write_text("")
    whole = [[str(tests)], [str(tmp_path)], [str(tests / "data"), str(tests)]]
    part = [[str(tests / "data")], [str(tests / "test_x.py")], [str(tests / "test_x.py::test_y")], []]
    assert all(tiers.whole_suite(args, tests) for args in whole)
    assert not any(tiers.whole_suite(args, tests) for args in part)
