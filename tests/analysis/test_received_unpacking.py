"""A received archive's members are written the same on a Python without tarfile's 'data' filter (PEP 706 came in
3.11.4; Debian 12's python3, the README's fresh Debian machine, is 3.11.2) as through the filter: the same bytes, the
same mode bits and time of each file (``received.extract_checked``; on 3.11.2 the filter argument was a TypeError)."""

from __future__ import annotations

import io
import os
import tarfile

from peftlab.analysis.archive.received import extract_checked

# (name, mode, data) of each file: set-id and group write bits, a plain file, an owner who may not execute it
FILES = [("study/run.sh", 0o4775, b"echo\n"), ("study/a/result.json", 0o644, b"{}\n"), ("study/a/odd", 0o070, b"x")]
MTIME = 1_700_000_000


def archive(path):
    with tarfile.open(path, "w") as tar:
        for name in ("study", "study/a"):
            folder = tarfile.TarInfo(name)
            folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(folder)
        for name, mode, data in FILES:
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime, member.uid = len(data), mode, MTIME, 4242
            tar.addfile(member, io.BytesIO(data))


def unpacked(path, into):
    into.mkdir()
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            extract_checked(tar, member, into / member.name, into)
    return {
        name: (os.stat(into / name).st_mode & 0o7777, os.stat(into / name).st_mtime, (into / name).read_bytes())
        for name, _, _ in FILES
    }


def test_a_python_without_the_data_filter_writes_what_the_filter_writes(tmp_path, monkeypatch):
    archive(tmp_path / "a.tar")
    filtered = unpacked(tmp_path / "a.tar", tmp_path / "filtered") if hasattr(tarfile, "data_filter") else None
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    unfiltered = unpacked(tmp_path / "a.tar", tmp_path / "unfiltered")
    assert unfiltered["study/run.sh"][0] == 0o755  # the set-id bit and the group's write bit dropped
    assert unfiltered["study/a/odd"][0] == 0o640  # no write for the group, no execute where its owner had none
    assert {times for _, times, _ in unfiltered.values()} == {MTIME}
    assert [data for _, _, data in unfiltered.values()] == [data for _, _, data in FILES]
    assert filtered in (None, unfiltered)  # None: this Python has no filter (3.11.2), the values above hold it
