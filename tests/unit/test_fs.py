"""cluster/storage/fs.py: the SimFS power-loss model, and RealFS doing the same things for real."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cluster.storage.fs import AppendFile, FileSystem, RealFS, SimCrash, SimFS


def _durable_file(fs: SimFS, path: str, data: bytes) -> AppendFile:
    f = fs.open_append(path)
    f.write(data)
    f.fsync()
    fs.fsync_dir(path.rsplit("/", 1)[0] or "/")
    return f


def test_protocols_are_satisfied() -> None:
    assert isinstance(SimFS(), FileSystem)
    assert isinstance(RealFS(), FileSystem)


def _pages(data: bytes, start: int, page: int) -> list[bytes]:
    """data cut at page boundaries, from start on (the first piece ends at the first boundary)."""
    cuts = [start] + list(range((start // page + 1) * page, len(data), page)) + [len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if a < b]


def test_synced_data_survives_and_any_subset_of_unsynced_pages_reaches_the_disk() -> None:
    durable, written = b"d" * 100, b"x" * 2048
    holes_before_data = full = none = 0
    for seed in range(80):
        fs = SimFS(page_size=512)
        fs.makedirs("/d")
        fs.fsync_dir("/")
        f = _durable_file(fs, "/d/f", durable)
        f.write(written)
        fs.crash(random.Random(seed))
        data = fs.read("/d/f")
        assert data.startswith(durable) and len(data) <= len(durable) + len(written)
        pieces = _pages(data, len(durable), 512)
        # A page holds its new bytes or, lost, zeros (where the file grew): never part of each.
        assert all(p in (b"x" * len(p), bytes(len(p))) for p in pieces), pieces
        kinds = [p[:1] for p in pieces]
        full += data == durable + written
        none += set(kinds) <= {b"\0"}
        holes_before_data += any(a == b"\0" and b == b"x" for a, b in zip(kinds, kinds[1:], strict=False))
    assert full and none and holes_before_data  # all, nothing, and a later page without an earlier one


def test_a_lost_page_keeps_the_old_bytes_of_a_rewritten_file() -> None:
    """Writing over durable content (a preallocated WAL segment's zeros, say): each page written since the
    last fsync comes back new or old, independently; after fsync, the new."""
    old = bytes(range(256)) * 8  # 2048 bytes, 4 pages of 512
    seen = set()
    for seed in range(60):
        fs = SimFS(page_size=512)
        fs.makedirs("/d")
        fs.fsync_dir("/")
        _durable_file(fs, "/d/f", old).close()
        f = fs.open_write_at("/d/f", 300)
        f.write(b"y" * 1200)  # pages 0..2
        new = fs.read("/d/f")
        fs.crash(random.Random(seed))
        data = fs.read("/d/f")
        assert len(data) == len(old)
        picks = []
        for page in range(4):
            got = data[page * 512 : (page + 1) * 512]
            assert got in (old[page * 512 : (page + 1) * 512], new[page * 512 : (page + 1) * 512])
            picks.append(got == new[page * 512 : (page + 1) * 512])
        seen.add(tuple(picks[:3]))
    assert (True, True, True) in seen and (False, False, False) in seen and len(seen) > 3

    fs = SimFS()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    _durable_file(fs, "/d/f", bytes(8)).close()
    f = fs.open_write_at("/d/f", 6)
    f.write(b"xyz")  # runs past the end: extends the file
    f.fsync()
    fs.crash(random.Random(0))
    assert fs.read("/d/f") == bytes(6) + b"xyz"


def test_page_size_is_a_multiple_of_a_sector() -> None:
    with pytest.raises(ValueError):
        SimFS(page_size=100)


def test_fsync_makes_all_appended_data_durable() -> None:
    fs = SimFS()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    f = _durable_file(fs, "/d/f", b"a")
    f.write(b"b")
    f.write(b"c")
    f.fsync()
    assert fs.fsync_count == 4  # two file fsyncs, two directory fsyncs
    for seed in range(10):
        fs.crash(random.Random(seed))
        assert fs.read("/d/f") == b"abc"


def test_creation_needs_a_directory_fsync() -> None:
    kept = set()
    for seed in range(40):
        fs = SimFS()
        fs.makedirs("/d")
        fs.fsync_dir("/")
        f = fs.open_append("/d/f")
        f.write(b"x")
        f.fsync()  # the content is durable, the name is not
        fs.crash(random.Random(seed))
        kept.add(fs.exists("/d/f"))
        if fs.exists("/d/f"):
            assert fs.read("/d/f") == b"x"
    assert kept == {True, False}

    fs = SimFS()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    _durable_file(fs, "/d/f", b"x")
    for seed in range(10):
        fs.crash(random.Random(seed))
        assert fs.read("/d/f") == b"x"


def test_directory_creation_needs_the_parent_fsynced() -> None:
    kept = set()
    for seed in range(40):
        fs = SimFS()
        fs.makedirs("/a/b")
        fs.fsync_dir("/a")  # b's name in a is durable, a's name in / is not
        _durable_file(fs, "/a/b/f", b"x")
        fs.crash(random.Random(seed))
        kept.add(fs.exists("/a/b/f"))
        assert fs.exists("/a") == fs.exists("/a/b/f")
    assert kept == {True, False}


def test_rename_is_atomic_and_durable_after_dir_fsync() -> None:
    seen = set()
    for seed in range(60):
        fs = SimFS()
        fs.makedirs("/d")
        fs.fsync_dir("/")
        _durable_file(fs, "/d/old", b"OLD")
        _durable_file(fs, "/d/new.tmp", b"NEW")
        fs.rename("/d/new.tmp", "/d/old")
        assert fs.read("/d/old") == b"NEW" and not fs.exists("/d/new.tmp")
        fs.crash(random.Random(seed))
        names = fs.listdir("/d")
        # Either the rename happened (one file, new content) or not (both files as before).
        if names == ["old"]:
            assert fs.read("/d/old") == b"NEW"
            seen.add("new")
        else:
            assert names == ["new.tmp", "old"]
            assert fs.read("/d/old") == b"OLD" and fs.read("/d/new.tmp") == b"NEW"
            seen.add("old")
    assert seen == {"old", "new"}

    fs = SimFS()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    _durable_file(fs, "/d/a", b"A")
    fs.rename("/d/a", "/d/b")
    fs.fsync_dir("/d")
    for seed in range(10):
        fs.crash(random.Random(seed))
        assert fs.listdir("/d") == ["b"] and fs.read("/d/b") == b"A"


def test_removal_needs_a_directory_fsync() -> None:
    kept = set()
    for seed in range(40):
        fs = SimFS()
        fs.makedirs("/d")
        fs.fsync_dir("/")
        _durable_file(fs, "/d/f", b"x")
        fs.remove("/d/f")
        assert not fs.exists("/d/f")
        fs.crash(random.Random(seed))
        kept.add(fs.exists("/d/f"))
    assert kept == {True, False}


def test_truncate_below_the_synced_length_is_undone_or_kept() -> None:
    seen = set()
    for seed in range(40):
        fs = SimFS()
        fs.makedirs("/d")
        fs.fsync_dir("/")
        _durable_file(fs, "/d/f", b"0123456789")
        fs.truncate("/d/f", 4)
        assert fs.read("/d/f") == b"0123"
        fs.crash(random.Random(seed))
        data = fs.read("/d/f")
        assert data in (b"0123", b"0123456789")
        seen.add(data)
    assert len(seen) == 2

    fs = SimFS()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    f = _durable_file(fs, "/d/f", b"0123456789")
    fs.truncate("/d/f", 4)
    f.fsync()
    fs.crash(random.Random(1))
    assert fs.read("/d/f") == b"0123"


def test_rewrite_after_truncate_keeps_old_content_or_the_new() -> None:
    seen = set()
    for seed in range(40):
        fs = SimFS()
        fs.makedirs("/d")
        fs.fsync_dir("/")
        f = _durable_file(fs, "/d/f", b"0123456789")
        fs.truncate("/d/f", 4)
        f.write(b"abcdef")
        fs.crash(random.Random(seed))
        data = fs.read("/d/f")
        assert data in (b"0123456789", b"0123abcdef")  # one page: it reached the disk or not
        seen.add(data)
    assert len(seen) == 2


def test_allocate_extends_with_zeros(tmp_path: Path) -> None:
    for fs, path in ((SimFS(), "/f"), (RealFS(), str(tmp_path / "f"))):
        fs.open_append(path).close()
        assert fs.allocate(path, 1000)
        assert fs.size(path) == 1000 and fs.read(path) == bytes(1000)
        f = fs.open_write_at(path, 10)
        f.write(b"abc")
        f.fsync()
        f.close()
        assert fs.read(path) == bytes(10) + b"abc" + bytes(987)


def test_crash_is_deterministic_and_the_fs_is_usable_afterwards() -> None:
    def run(seed: int) -> list[tuple[str, bytes]]:
        fs = SimFS()
        fs.makedirs("/d")
        fs.fsync_dir("/")
        for i in range(5):
            f = fs.open_append(f"/d/f{i}")
            f.write(bytes(range(50)))
            if i % 2:
                f.fsync()
        fs.crash(random.Random(seed))
        return [(n, fs.read(f"/d/{n}")) for n in fs.listdir("/d")]

    assert run(7) == run(7)
    assert any(run(7) != run(s) for s in range(8, 20))

    fs = SimFS()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    f = _durable_file(fs, "/d/f", b"x")
    fs.crash(random.Random(0))
    with pytest.raises(OSError):
        f.write(b"stale")
    g = fs.open_append("/d/f")
    g.write(b"y")
    g.fsync()
    assert fs.read("/d/f") == b"xy"
    assert fs.read_range("/d/f", 1, 10) == b"y" and fs.size("/d/f") == 2


def test_fail_after_raises_before_the_operation() -> None:
    fs = SimFS()
    fs.makedirs("/d")
    fs.fsync_dir("/")
    f = _durable_file(fs, "/d/f", b"a")
    fs.fail_after(2)
    f.write(b"b")
    with pytest.raises(SimCrash):
        f.fsync()
    f.write(b"c")  # disarmed after firing
    assert fs.read("/d/f") == b"abc"
    fs.crash(random.Random(0))
    assert fs.read("/d/f").startswith(b"a")


def test_corrupt_flips_a_byte() -> None:
    fs = SimFS()
    fs.makedirs("/d")
    _durable_file(fs, "/d/f", b"\x00\x00")
    fs.corrupt("/d/f", 1)
    assert fs.read("/d/f") == b"\x00\xff"


def test_missing_paths_raise() -> None:
    fs = SimFS()
    with pytest.raises(FileNotFoundError):
        fs.read("/nope")
    with pytest.raises(FileNotFoundError):
        fs.open_append("/nodir/f")
    with pytest.raises(FileNotFoundError):
        fs.listdir("/nodir")


def test_realfs_does_the_same_things(tmp_path: object) -> None:
    fs = RealFS()
    d = f"{tmp_path}/a/b"
    fs.makedirs(d)
    fs.makedirs(d)
    assert fs.exists(d) and fs.listdir(d) == []
    f = fs.open_append(f"{d}/f")
    f.write(b"hello ")
    f.write(memoryview(b"world"))
    f.fsync()
    f.close()
    fs.fsync_dir(d)
    assert fs.fsync_count == 2
    assert fs.read(f"{d}/f") == b"hello world" and fs.size(f"{d}/f") == 11
    assert fs.read_range(f"{d}/f", 6, 100) == b"world"
    fs.truncate(f"{d}/f", 5)
    fs.rename(f"{d}/f", f"{d}/g")
    assert fs.listdir(d) == ["g"] and fs.read(f"{d}/g") == b"hello"
    fs.remove(f"{d}/g")
    assert not fs.exists(f"{d}/g")
    with pytest.raises(OSError):
        f.write(b"closed")
