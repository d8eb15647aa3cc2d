"""Per-episode persisted stage state and atomic file writes.

Every stage writes its result under OUT_DIR/work/<episode>/ with a temporary name and renames it
into place, so a killed run leaves either the whole result or nothing; a rerun skips stages whose
result exists (resume) and recomputes the rest.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside `path` for writers that need a real file (ffmpeg, np.save), renamed when done.
    No other process or thread gets the same name: writers of the same file at once (two trainings
    preparing one clip) each finish, and the last rename wins."""
    return path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.part{path.suffix}")


def remove_partial_files(folder: Path) -> int:
    """Delete leftovers of a killed run (hidden *.part* files); returns how many."""
    removed = 0
    if folder.exists():
        for leftover in folder.rglob(".*.part*"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


class EpisodeWork:
    """OUT_DIR/work/<episode>/: one file per stage result."""

    def __init__(self, root: Path, episode: str):
        self.folder = root / "work" / episode
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / name

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def load_json(self, name: str):
        with open(self.path(name)) as stream:
            return json.load(stream)

    def save_json(self, name: str, data) -> None:
        atomic_write_json(self.path(name), data)

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.path(name)) as data:
            return {key: data[key] for key in data.files}

    def save_npz(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(self.path(name), buffer.getvalue())
