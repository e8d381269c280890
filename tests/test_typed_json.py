"""A study file read against its writer's TypedDict (``utils.typed_json``): the first field that differs, named by its
place in the file, with what it holds and what was expected; keys the schema does not know are kept."""

import json
from typing import Annotated, Literal, Required, TypedDict

import pytest

from peftlab.utils.typed_json import DamagedFile, Scalar, json_problem, non_empty, read_record


class Grid(TypedDict):
    key: str
    values: Annotated[list[Scalar], non_empty]


class Range(TypedDict):
    key: str
    low: float
    high: float


class Record(TypedDict, total=False):
    name: Required[str]
    state: Required[Literal["COMPLETE", "FAIL"]]
    count: int
    score: float | None
    axes: list[Grid | Range]
    params: dict[str, Scalar]


SOUND = {"name": "a", "state": "FAIL", "count": 3, "score": None, "axes": [{"key": "k", "low": 0, "high": 1}]}


@pytest.mark.parametrize(
    "change, problem",
    [
        ({}, None),
        ({"later": [1, {"x": 2}]}, None),  # a key the schema does not know: kept, not read
        ({"count": True}, "count is True: expected an integer"),
        ({"count": 2.0}, "count is 2.0: expected an integer"),
        ({"score": float("inf")}, "score is inf: expected a finite number or null"),
        ({"score": False}, "score is False: expected a finite number or null"),
        ({"score": 1}, None),  # an int is a number
        ({"state": "DONE"}, "state is 'DONE': expected one of 'COMPLETE', 'FAIL'"),
        ({"axes": [{"key": "k", "values": []}]}, "axes[0].values is []: expected at least one value"),
        ({"axes": [{"key": "k", "low": "0", "high": 1}]}, "axes[0].low is '0': expected a finite number"),
        ({"axes": [{"values": [1]}]}, "axes[0] is {'values': [1]}: expected an object with key, values or an object"),
        ({"params": {"lr": [1]}}, "params['lr'] is [1]: expected true or false or an integer or a finite number or"),
        ({"axes": "k"}, "axes is 'k': expected a list"),
    ],
)
def test_the_first_field_that_differs_is_named_with_its_value_and_what_was_expected(change, problem):
    record = {**SOUND, **change}
    found = json_problem(record, Record)
    assert found == problem if problem is None else found.startswith(problem), found
    assert json_problem({k: v for k, v in SOUND.items() if k != "state"}, Record) == "state is missing"


def test_a_file_is_none_when_missing_and_damaged_when_no_json_object(tmp_path):
    assert read_record(tmp_path / "absent.json", Record) is None
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(DamagedFile, match=r"list.json is damaged: expected a JSON object$"):
        read_record(tmp_path / "list.json", Record)
    (tmp_path / "record.json").write_text(json.dumps({**SOUND, "count": "3"}))
    with pytest.raises(DamagedFile, match=r"record.json is damaged: count is '3': expected an integer$"):
        read_record(tmp_path / "record.json", Record)
