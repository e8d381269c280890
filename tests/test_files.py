import os
import stat

import pytest

from peftlab.utils.files import read_json, write_atomic, write_json_atomic


@pytest.fixture
def umask():
    def set_umask(value):
        previous.append(os.umask(value))

    previous = []
    yield set_umask
    if previous:
        os.umask(previous[0])


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_permissions_of_the_process_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_json_atomic(tmp_path / "result.json", {"a": 1})
    write_atomic(tmp_path / "config.yaml", lambda tmp: open(tmp, "w").write("a: 1\n"))
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "config.yaml").stat().st_mode) == mode
    assert read_json(tmp_path / "result.json") == {"a": 1}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json_atomic(tmp_path / "result.json", {"a": 1})

    def fail(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "result.json", fail)
    assert read_json(tmp_path / "result.json") == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_weights_honour_the_umask_like_every_other_file(tmp_path, umask):
    """Issue 72: safetensors creates its file 0600 whatever the umask, so adapter and model weights were unreadable
    by colleagues on a shared file system while result.json was 0644: every atomic write ends in the umask's mode."""
    import torch
    from safetensors.torch import save_file

    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "adapter.safetensors", lambda tmp: save_file({"a": torch.zeros(2)}, tmp))
        write_json_atomic(tmp_path / "result.json", {"status": "completed"})
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("adapter.safetensors", "result.json")}
    assert modes == {"adapter.safetensors": 0o666 & ~umask, "result.json": 0o666 & ~umask}
