"""samkit._atomic: every file samkit writes appears whole or not at all, with the umask's mode."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from samkit import _atomic


@pytest.fixture(params=[0o022, 0o002, 0o077], ids=["umask022", "umask002", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_gives_the_umask_mode_and_the_content(tmp_path, umask):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    _atomic.write_text(tmp_path / "a.txt", "héllo\n")
    _atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    _atomic.write_json(tmp_path / "c.json", {"x": [1, 2]})
    _atomic.save_torch(tmp_path / "d.pt", {"w": torch.arange(3)})
    _atomic.save_npz(tmp_path / "e.npz", {"x": np.arange(4)})
    _atomic.save_figure(fig, tmp_path / "f.png")
    plt.close(fig)
    for name in ("a.txt", "b.bin", "c.json", "d.pt", "e.npz", "f.png"):
        assert mode(tmp_path / name) == 0o666 & ~umask, name
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    assert torch.equal(torch.load(tmp_path / "d.pt")["w"], torch.arange(3))
    assert np.load(tmp_path / "e.npz")["x"].tolist() == [0, 1, 2, 3]
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.txt", "b.bin", "c.json", "d.pt", "e.npz", "f.png"
    ]  # fmt: skip  (no temporary file left behind)


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _atomic.save_torch(path, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(Exception, match="lambda|pickle"):  # noqa: B017  (torch's own error)
        _atomic.save_torch(path, {"epoch": 2, "bad": lambda: None})  # fails after writing some
    assert path.read_bytes() == before
    with pytest.raises(TypeError):
        _atomic.write_json(path, {"x": object()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_replacing_a_file_gives_the_umask_mode_not_the_old_one(tmp_path, umask):
    path = tmp_path / "x.json"
    path.write_text("{}")
    os.chmod(path, 0o600)  # as every run file was before: mkstemp's mode
    _atomic.write_json(path, {"y": 1})
    assert mode(path) == 0o666 & ~umask and json.loads(path.read_text()) == {"y": 1}


def test_no_folder_is_created_behind_the_callers_back(tmp_path):
    with pytest.raises(FileNotFoundError):
        _atomic.write_text(tmp_path / "typo" / "x.txt", "x")
    assert list(tmp_path.iterdir()) == []
