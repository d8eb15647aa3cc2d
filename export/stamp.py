"""The stamp of an exported model repository: what it was exported from.

A digest of the checkpoint (config + weights) and of the code that turns it into graphs (`models/`,
`export/`), so a repository is exported again when either changes: a changed network definition can
change the exported graph (and its speed) with the same weights. `make serve` and the benchmarks
reuse build/model_repository only while its `.exported-from` holds this.

    python -m export.stamp CHECKPOINT_DIR [EXPORT FLAGS...]   # prints the digest

The export flags are part of it: a repository exported with other flags is exported again.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STAMP_FILE = ".exported-from"
# How `make serve` (scripts/serve.sh) exports the default avatar for the embedded CPU backend; the
# benchmarks export the same way, so they can reuse what `make serve` built.
SERVE_EXPORT_FLAGS = ("--instance-kind", "cpu", "--int8-renderer")


def export_stamp(checkpoint: Path, flags: tuple[str, ...] = SERVE_EXPORT_FLAGS) -> str:
    digest = hashlib.sha256(" ".join(flags).encode() + b"\0")
    sources = [checkpoint / "config.json", checkpoint / "model.safetensors"]
    sources += sorted((REPO_ROOT / "models").glob("*.py")) + sorted((REPO_ROOT / "export").glob("*.py"))
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


if __name__ == "__main__":
    print(export_stamp(Path(sys.argv[1]), tuple(sys.argv[2:])))
