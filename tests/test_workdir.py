"""The one atomic-write helper and the resumable work directory (irisml_tf.workdir)."""
import json

import pytest

from irisml_tf.workdir import WorkDir, atomic_json, atomic_write

SETTINGS = {"format": 1, "seed": 7, "chunk_size": 5}


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    seen = []

    def fail(tmp):
        seen.append(tmp)
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old\n" and not seen[0].exists()  # the old file, no temporary left
    assert seen[0].suffix == ".csv" and seen[0].parent == tmp_path  # writers choose the format by suffix
    atomic_write(path, lambda tmp: tmp.write_text("new\n"))
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    atomic_json(tmp_path / "m.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2]}


def _finished_run(tmp_path):
    work = WorkDir.open(tmp_path / "out.csv.parts", SETTINGS, resume=False, target=tmp_path / "out.csv")
    work.start()
    for i in range(2):
        name = work.write_part(f"part-{i}.txt", lambda tmp, i=i: tmp.write_text(str(i)))
        work.record(str(i), {"part": name, "rows": 5})
    return work


def test_work_dir_records_chunks(tmp_path):
    work = _finished_run(tmp_path)
    manifest = json.loads((work / WorkDir.MANIFEST).read_text())
    assert manifest == {"settings": SETTINGS, "chunks": {"0": {"part": "part-0.txt", "rows": 5},
                                                         "1": {"part": "part-1.txt", "rows": 5}}}
    assert (work / "part-1.txt").read_text() == "1" and work.has("part-0.txt") and not work.has(None)
    assert sorted(p.name for p in work.path.iterdir()) == ["manifest.json", "part-0.txt", "part-1.txt"]
    work.remove()
    assert not work.path.exists()


def test_work_dir_resume(tmp_path):
    _finished_run(tmp_path)
    path, out = tmp_path / "out.csv.parts", tmp_path / "out.csv"
    with pytest.raises(FileExistsError, match=r"holds an unfinished run for .*out.csv: continue it with --resume"):
        WorkDir.open(path, SETTINGS, resume=False, target=out)
    said = []
    work = WorkDir.open(path, SETTINGS, resume=True, target=out, say=said.append)
    assert list(work.chunks) == ["0", "1"] and said == [f"resuming: 2 chunk(s) already done in {path}"]
    # a chunk whose part file is gone is not done
    (path / "part-1.txt").unlink()
    work = WorkDir.open(path, SETTINGS, resume=True, target=out, files=lambda e: [e["part"]], say=said.append)
    assert list(work.chunks) == ["0"] and said[-1].startswith("resuming: 1 chunk(s)")


def test_work_dir_refuses_other_settings(tmp_path):
    _finished_run(tmp_path)
    path, out = tmp_path / "out.csv.parts", tmp_path / "out.csv"
    with pytest.raises(ValueError) as e:
        WorkDir.open(path, dict(SETTINGS, seed=8, chunk_size=6), resume=True, target=out)
    msg = str(e.value)
    assert msg.startswith(f"cannot resume {path}: the run's settings differ")
    assert "  seed: was 7, now 8" in msg and "  chunk_size: was 5, now 6" in msg and "format" not in msg
    (path / WorkDir.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is unreadable"):
        WorkDir.open(path, SETTINGS, resume=True, target=out)


def test_work_dir_nothing_to_resume(tmp_path):
    said = []
    work = WorkDir.open(tmp_path / "x.parts", SETTINGS, resume=True, target=tmp_path / "x", say=said.append)
    assert work.chunks == {} and not work.path.exists()
    assert said == [f"nothing to resume ({tmp_path / 'x.parts'} does not exist): starting"]
