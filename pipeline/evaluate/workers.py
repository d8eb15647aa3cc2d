"""The evaluation's heavy work in worker processes, each holding its own copy of the avatar.

A rollout is a chain of small steps that one torch thread runs fastest, and the rendered-frame measurements
(renderer, face mesh, dlib) keep one core busy each, so on the 2-core machine two processes take about half
the time of one. A task computes exactly what it would in one process (the same noise, one torch thread),
so the figures do not depend on the number of workers. With one worker the tasks run here, in order.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from models.avatar import Avatar, load_avatar
from pipeline.evaluate.face_metrics import IdentityEncoder
from pipeline.evaluate.long_session import long_session
from pipeline.evaluate.rendered import ClipFrameFigures, ClipFrames, measure_clip, rendered_jaw
from pipeline.evaluate.rollouts import generate_seed, rollout_threads
from pipeline.train.windows import ClipInputs

# This process's avatar and identity encoder, made on first use (a worker's, or the caller's with one worker).
_state: dict[str, Any] = {}


def _start_worker(checkpoint: str) -> None:
    torch.set_num_threads(1)
    _state.clear()
    _state["checkpoint"] = checkpoint


def _avatar() -> Avatar:
    if "avatar" not in _state:
        _state["avatar"] = load_avatar(Path(_state["checkpoint"]))
    return _state["avatar"]


def _identity() -> IdentityEncoder:
    if "identity" not in _state:
        _state["identity"] = IdentityEncoder()
    return _state["identity"]


# The tasks: module-level functions of picklable arguments.

def generate_seed_task(inputs: list[ClipInputs], lambdas: list[float], seed: int) -> list[list[np.ndarray]]:
    """[lambda][clip] (N, 15) generated from noise seed `seed`."""
    return generate_seed(_avatar(), inputs, lambdas, seed)


def long_session_task(inputs: list[ClipInputs], host_motion: list[np.ndarray], lambda_video: float,
                      seeds: int) -> dict:
    return long_session(_avatar().motion_generator, inputs, host_motion, lambda_video, seeds)


def measure_clip_task(clip: ClipFrames) -> ClipFrameFigures:
    return measure_clip(_avatar(), _identity(), clip)


def rendered_jaw_task(motion: np.ndarray) -> np.ndarray:
    return rendered_jaw(_avatar(), motion)


class EvaluationWorkers:
    """`with EvaluationWorkers(checkpoint, 2, avatar) as workers: workers.run([(task, args), ...])`."""

    def __init__(self, checkpoint: Path, workers: int, avatar: Avatar | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.checkpoint, self.workers, self.avatar = Path(checkpoint), workers, avatar
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "EvaluationWorkers":
        if self.workers > 1:
            # spawn: a forked copy of a process that has run torch and mediapipe threads can deadlock.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(str(self.checkpoint),))
        else:  # the tasks run here, on the caller's avatar
            _state.clear()
            _state["checkpoint"] = str(self.checkpoint)
            if self.avatar is not None:
                _state["avatar"] = self.avatar
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, calls: list[tuple[Callable, tuple]], desc: str, quiet: bool = True) -> list:
        """Each (task, args) -> its result, in the order given; workers take them in that order."""
        if self._pool is None:
            results = []
            for task, args in tqdm(calls, desc=desc, unit="task", disable=quiet):
                with rollout_threads():
                    results.append(task(*args))
            return results
        futures: dict[Future, int] = {self._pool.submit(task, *args): i for i, (task, args) in enumerate(calls)}
        results: list = [None] * len(calls)
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="task", disable=quiet):
            results[futures[future]] = future.result()
        return results

