"""Files that appear whole or not at all: the one atomic-write helper, for every writer that must
survive an interruption (resumable work directories, run metrics, assembled outputs), and
:class:`WorkDir`, the resumable work directory of a chunked job (``irisml-tf infer``)."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = ["atomic_write", "atomic_json", "WorkDir"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    The rename is atomic on POSIX file systems, so a reader (or a resumed run) sees either the old
    file or the complete new one, never a half-written file. The temporary keeps ``path``'s suffix
    (writers choose the format from it); it is removed if ``write`` raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1) + "\n"))


class WorkDir:
    """The work directory of a resumable chunked job (``<out>.parts/``): a manifest with the run's
    settings and its finished chunks, and the chunks' part files, each written atomically.

    ``settings`` is the JSON the run is identified by: a resumed run must present equal settings.
    A finished chunk is recorded as a JSON entry (the job decides its fields) under a string key;
    the manifest is rewritten after each chunk, so an interruption loses at most the chunk it was
    working on.
    """

    MANIFEST = "manifest.json"

    def __init__(self, path: str | Path, settings: Mapping):
        self.path = Path(path)
        self.settings = dict(settings)
        self.chunks: dict[str, dict] = {}

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def open(cls, path: str | Path, settings: Mapping, *, resume: bool, target: str | Path,
             files: Callable[[dict], Iterable[str | None]] = lambda entry: (),
             say: Callable[[str], None] = print) -> WorkDir:
        """The work directory for a run writing ``target``, with the chunks already done when
        ``resume``. Without ``resume`` an existing directory is an error (nothing is deleted);
        with it, the manifest's settings must equal ``settings`` (ValueError listing each one
        that differs), and a recorded chunk counts as done only if every file ``files(entry)``
        names is there. Nothing is created here (:meth:`start` does)."""
        work = cls(path, settings)
        if work.path.exists():
            if not resume:
                raise FileExistsError(f"{work.path} holds an unfinished run for {target}: continue it with "
                                      "--resume (resume=True), or delete that directory to start again")
            work.chunks = {k: v for k, v in work._read_manifest().items() if all(map(work.has, files(v)))}
            say(f"resuming: {len(work.chunks)} chunk(s) already done in {work.path}")
        elif resume:
            say(f"nothing to resume ({work.path} does not exist): starting")
        return work

    def _read_manifest(self) -> dict[str, dict]:
        manifest_path = self.path / self.MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{manifest_path} is unreadable ({e}); delete {self.path} to start again") from None
        old = manifest.get("settings", {})
        differ = [k for k in self.settings if old.get(k) != self.settings[k]]
        if differ:
            lines = [f"  {k}: was {old.get(k)!r}, now {self.settings[k]!r}" for k in differ]
            raise ValueError(f"cannot resume {self.path}: the run's settings differ\n" + "\n".join(lines)
                             + f"\nrerun with the original settings, or delete {self.path} to start again")
        return dict(manifest.get("chunks", {}))

    def has(self, name: str | None) -> bool:
        """Whether the work directory holds the file ``name`` (False for None)."""
        return name is not None and (self.path / name).exists()

    def start(self) -> None:
        """Create the directory (if new) and write the manifest."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._save()

    def write_part(self, name: str, write: Callable[[Path], None]) -> str:
        """Write the part file ``name`` atomically (:func:`atomic_write`); returns ``name``."""
        atomic_write(self.path / name, write)
        return name

    def record(self, key: str, entry: dict) -> None:
        """Mark chunk ``key`` done (its part files written) and save the manifest."""
        self.chunks[key] = entry
        self._save()

    def _save(self) -> None:
        atomic_json(self.path / self.MANIFEST, {"settings": self.settings, "chunks": self.chunks})

    def remove(self) -> None:
        """Delete the directory and everything in it (the run is assembled)."""
        shutil.rmtree(self.path)
