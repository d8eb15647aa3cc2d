"""Training of the avatar networks (torch): `f2f train` (`run.py`) reads a curated dataset (`data.py`),
assembles windows as serving does (`windows.py`) and runs the stages (`stages.py`) with one resumable
loop (`loop.py`). See docs/model.md."""
