"""One resumable training loop, shared by every stage.

AdamW with warmup + cosine decay, gradient clipping, EMA weights, AMP (bfloat16 autocast) when the
device is a CUDA GPU, data parallelism when started by `torchrun` (DistributedDataParallel over
gloo on CPU, nccl on GPU; the global batch is split across ranks), TensorBoard scalars and a tqdm
progress bar on rank 0.

Each step draws its batch from `sample(step, rank)` with randomness derived from (seed, rank,
step), so a resumed run continues with exactly the batches an uninterrupted one would have drawn.

Checkpoints (rank 0, every `checkpoint_every` steps and at the end), in the stage's directory:
  weights.safetensors  the module's weights and, prefixed "ema.", its EMA weights
  state.pt             optimizer state, step, losses, elapsed seconds, the configuration fingerprint
A checkpoint from another configuration (different fingerprint) is ignored: the stage starts afresh.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 1000
    batch_size: int = 64  # global: split across ranks
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Processes: one, or torchrun's
# ---------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, prefer_cuda: bool = True) -> "DistContext":
        """Join torchrun's process group when WORLD_SIZE > 1; pick cuda:LOCAL_RANK or the CPU."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = prefer_cuda and torch.cuda.is_available()
        device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
        return cls(rank, world, device)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def autocast(device: torch.device):
    """bfloat16 autocast on CUDA (no loss scaling needed); full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(progress, 1.0))))


def step_rngs(seed: int, rank: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The randomness of one step of one rank: a pure function of (seed, rank, step)."""
    rng = np.random.default_rng([seed, rank, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class TrainLoop:
    """Trains the parameters of `module` that require grad, by minimising `objective(**batch)[0]`.

    `objective` is an nn.Module holding `module`; its forward returns (loss, {name: scalar}).
    """

    def __init__(self, name: str, module: nn.Module, objective: nn.Module, config: LoopConfig, directory: Path,
                 fingerprint: str, dist: DistContext = DistContext(), writer=None, quiet: bool = False):
        self.name, self.module, self.config, self.directory = name, module, config, Path(directory)
        self.fingerprint, self.dist, self.writer, self.quiet = fingerprint, dist, writer, quiet
        self.objective = objective.to(dist.device)
        trainable = [p for p in module.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(f"{name}: nothing to train")
        self.trainable = trainable
        self.trainable_names = {name for name, p in module.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        self.ema = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0
        self.wrapped = self.objective
        if dist.distributed:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                find_unused_parameters=True)
        self._resume()

    # -- checkpoints ---------------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        return self.directory / "weights.safetensors"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.pt"

    def _resume(self) -> None:
        if not (self.state_path.is_file() and self.weights_path.is_file()):
            return
        state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.fingerprint:
            if self.dist.main:
                print(f"{self.name}: the checkpoint in {self.directory} is from another configuration; "
                      "starting afresh", file=sys.stderr)
            return
        tensors = load_file(str(self.weights_path))
        self.module.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("ema.")})
        self.ema = {k[4:]: v.to(self.ema[k[4:]].device) for k, v in tensors.items() if k.startswith("ema.")}
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.losses, self.seconds = state["step"], state["losses"], state["seconds"]

    def _save(self) -> None:
        if not self.dist.main:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.items()})
        tmp = self.weights_path.with_name("weights.partial.safetensors")
        save_file(tensors, str(tmp))
        os.replace(tmp, self.weights_path)
        state = {"fingerprint": self.fingerprint, "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "losses": self.losses, "seconds": self.seconds}
        tmp = self.state_path.with_name("state.partial.pt")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)
        (self.directory / "progress.json").write_text(json.dumps(self.summary()) + "\n")

    # -- training ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.step >= self.config.steps

    def run(self, sample: Callable[[int, int], dict], until: int | None = None) -> None:
        """Train to `config.steps` (or stop after step `until`, as an interruption would)."""
        cfg, dist = self.config, self.dist
        last = cfg.steps if until is None else min(until, cfg.steps)
        self.module.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.name, unit="step",
                   disable=self.quiet or not dist.main, dynamic_ncols=True)
        window: list[float] = []
        while self.step < last:
            started = time.perf_counter()
            lr = lr_at(self.step, cfg.steps, cfg.warmup_steps, cfg.lr)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch = {k: v.to(dist.device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in sample(self.step, dist.rank).items()}
            with autocast(dist.device):
                loss, logs = self.wrapped(**batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
            self.optimizer.step()
            with torch.no_grad():
                for key, value in self.module.state_dict().items():
                    if key in self.trainable_names:
                        self.ema[key].mul_(cfg.ema_decay).add_(value.detach(), alpha=1.0 - cfg.ema_decay)
                    else:  # frozen weights and buffers: exactly the module's (no rounding drift)
                        self.ema[key].copy_(value)
            value = float(loss.detach())
            if dist.distributed:  # the loss every rank saw, for the logs
                reduced = torch.tensor([value], device=dist.device)
                torch.distributed.all_reduce(reduced)
                value = float(reduced) / dist.world
            self.losses.append(value)
            window.append(value)
            self.step += 1
            self.seconds += time.perf_counter() - started
            bar.update(1)
            if self.step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{np.mean(window):.4f}")
                if self.writer is not None and dist.main:
                    self.writer.add_scalar(f"{self.name}/loss", float(np.mean(window)), self.step)
                    self.writer.add_scalar(f"{self.name}/lr", lr, self.step)
                    self.writer.add_scalar(f"{self.name}/grad_norm", float(grad_norm), self.step)
                    for key, scalar in logs.items():
                        self.writer.add_scalar(f"{self.name}/{key}", float(scalar), self.step)
                window = []
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self._save()
                dist.barrier()
        bar.close()
        self.module.eval()

    def ema_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.ema.items()}

    def summary(self) -> dict:
        losses = np.asarray(self.losses)
        if not len(losses):
            return {"steps": 0}
        k = max(len(losses) // 20, 1)
        return {"steps": self.step, "first_mean": round(float(losses[:k].mean()), 5),
                "last_mean": round(float(losses[-k:].mean()), 5), "seconds": round(self.seconds, 1)}
