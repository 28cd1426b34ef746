"""The one trainer every task uses: torchrun DDP or a plain process, exact resume, atomic checkpoints.

A task gives a model, a dataset of samples and a loss function; the trainer owns the data order (seeded by epoch,
split by rank), per-sample augmentation seeds (so resuming, or changing the number of loader workers, replays the
same augmentations), the optimiser and schedule, bf16 autocast, gradient accumulation, DDP or FSDP2,
checkpoints every N steps (temporary file, then rename; the last K kept) and the logs.

The dataset is map-style (the trainer's EpochSampler orders it) or iterable, such as webdataset shards
(`blip.data.webdata.WebDatasetPairs`: it splits its shards by rank and worker and reshuffles in `set_epoch`). An
iterable has no length, so `steps_per_epoch` says how long an epoch is; a resumed run skips the batches of the
current epoch it already consumed, which replays the same samples because the stream is a function of
(seed, epoch).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from blip.data.robust import SkipCounter, collate
from blip.distributed import is_distributed, rank, setup_distributed, world_size
from blip.errors import BlipError
from blip.progress import Progress
from blip.training.fsdp import average_gradients, fully_shard_model

LossFn = Callable[[nn.Module, dict[str, Any], "StepInfo"], dict[str, torch.Tensor]]


class TrainingError(BlipError):
    """Training cannot go on (non-finite loss, unusable resume state)."""


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping; the paper's recipes live in configs/*.yaml."""

    out: str = "runs/train"
    epochs: int = 1
    batch_size: int = 32  # per rank, per micro-step
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float = 1e-6
    schedule: str = "step"  # "step": warmup then lr * decay^epoch (pretraining); "cosine": per-epoch cosine to min_lr
    warmup_steps: int = 3000
    warmup_lr: float = 1e-6
    lr_decay: float = 0.9
    weight_decay: float = 0.05
    # Parameter-name prefix -> multiplier of the lr for those parameters (the first prefix that matches), e.g.
    # {"visual_encoder": 0.1}: a tower that starts trained, beside a text side that starts from nothing.
    lr_scale: dict[str, float] = field(default_factory=dict)
    checkpoint_every: int = 1000
    keep: int = 2
    log_every: int = 10
    seed: int = 42
    num_workers: int = 2
    bf16: bool | None = None  # default: on CUDA only
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)
    progress: bool = True
    # Bitwise-reproducible runs: seeds every RNG from `seed`, pins the CPU threads and takes deterministic kernels;
    # makes resumed runs equal to straight ones, and two runs of one recipe on one machine equal.
    deterministic: bool = False
    threads: int | None = None  # intra-op CPU threads under `deterministic` (None: torch's default, then recorded)
    fsdp: bool = False  # under torchrun: shard weights, gradients and optimiser state with FSDP2 instead of DDP
    steps_per_epoch: int | None = None  # optimiser steps in an epoch: required for iterable datasets, a cap otherwise
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # YAML 1.1 reads 5e-4 (no dot) as a string: take numbers written so, refuse anything else in one line.
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type).split(" | ")[0]
            if isinstance(value, str) and kind in ("float", "int"):
                try:
                    setattr(self, f.name, float(value) if kind == "float" else int(value))
                except ValueError:
                    raise BlipError(f"train.{f.name} must be a number, got {value!r}") from None
        for name, low in _AT_LEAST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise BlipError(f"train.{name} must be at least {low}, got {value}")
        if self.lr <= 0:
            raise BlipError(f"train.lr must be positive, got {self.lr}")


# TrainConfig fields a resumed run must share with its checkpoint (they fix which samples make each step), and
# those it may change with a warning (the optimisation from here on).
_SAME_RUN = {"batch_size", "grad_accum", "seed", "steps_per_epoch", "lr_scale"}  # lr_scale: the optimiser's groups
_SAME_SCHEDULE = {"epochs", "lr", "min_lr", "schedule", "warmup_steps", "warmup_lr", "lr_decay", "weight_decay"}

# The smallest value each count of TrainConfig may take.
_AT_LEAST = {
    "epochs": 1,
    "batch_size": 1,
    "grad_accum": 1,
    "warmup_steps": 0,
    "checkpoint_every": 1,
    "keep": 1,
    "log_every": 1,
    "num_workers": 0,
    "threads": 1,
    "max_steps": 1,
    "steps_per_epoch": 1,
}


@dataclass
class StepInfo:
    """Where training is; tasks use `epoch_progress` for ramps such as ITC's alpha."""

    step: int
    epoch: int
    batch_in_epoch: int
    batches_per_epoch: int

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.batch_in_epoch / max(1, self.batches_per_epoch)


def lr_at(cfg: TrainConfig, epoch: int, batch_in_epoch: int, steps_per_epoch: int) -> float:
    """The reference schedules as a pure function of the position, so resuming needs no scheduler state."""
    if cfg.schedule == "cosine":
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if epoch == 0:
        step = batch_in_epoch // cfg.grad_accum
        if step < cfg.warmup_steps:
            return min(cfg.lr, cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / cfg.warmup_steps)
        return cfg.lr
    return max(cfg.min_lr, cfg.lr * cfg.lr_decay**epoch)


class EpochSampler(Sampler[int]):
    """This rank's share of a permutation seeded by (seed, epoch), from a start position; yields global keys."""

    def __init__(self, n: int, seed: int, epoch: int, start: int, batch_size: int):
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
        per_rank = n // world_size() // batch_size * batch_size  # equal full batches on every rank
        mine = order[rank() :: world_size()][:per_rank]
        self.keys = (mine[start:] + epoch * n).tolist()  # key = epoch * n + index: the seed of its augmentation

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys)


class SeededIterable(IterableDataset):
    """An iterable dataset whose n-th item on a (rank, worker) is drawn under a seed of (run seed, epoch, rank,
    worker, n), so skipping consumed batches on resume replays the same augmentations."""

    def __init__(self, dataset: IterableDataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on (a new shard and sample order) and to the augmentation seeds."""
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        items = iter(self.dataset)
        for n in itertools.count():
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(hash((self.seed, self.epoch, rank(), worker, n)) % 2**63)
                item = next(items, _END)
            if item is _END:
                return
            yield item


_END = object()


class SeededDataset(Dataset):
    """Each sample's augmentation is drawn from a seed of (run seed, epoch, index), not from worker RNG state."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int) -> Any:
        # Only the CPU generator, which fork_rng restores: torch.manual_seed would also reseed CUDA, and before CUDA
        # is initialised it queues that call with a captured stack trace (139 us a sample against 5 us).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed * 1_000_003 + key)
            return self.dataset[key % len(self)]


def _rng_state() -> dict[str, Any]:
    name, keys, *rest = np.random.get_state()
    # weights_only loading takes tensors and plain values, not numpy arrays.
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.copy()), *rest],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _param_groups(model: nn.Module, weight_decay: float, lr_scale: dict[str, float]) -> list[dict[str, Any]]:
    """One AdamW group per lr multiplier; the reference applies weight decay to every parameter, and so do we."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next((v for k, v in lr_scale.items() if name.startswith(k)), 1.0)
            groups.setdefault(scale, []).append(p)
    for prefix in lr_scale:
        if not any(name.startswith(prefix) for name, _ in model.named_parameters()):
            raise BlipError(f"train.lr_scale: no parameter name starts with {prefix!r}")
    return [{"params": ps, "weight_decay": weight_decay, "lr_scale": v} for v, ps in groups.items()]


class Trainer:
    """Runs `loss_fn` over `dataset` with AdamW; `fit()` resumes from the newest checkpoint in `cfg.out`.

    With `cfg.fsdp` under torchrun the trainer shards a copy of `model` and, at the end of `fit()`, loads the
    trained weights back into `model` on every rank (which stays where it was, whole); otherwise it trains `model`.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        dataset: Dataset | IterableDataset,
        loss_fn: LossFn,
        collate_fn: Callable[[list[Any]], dict[str, Any]] = collate,
    ):
        self.cfg = cfg
        self.device = setup_distributed()
        self.iterable = isinstance(dataset, IterableDataset)
        self.dataset = SeededIterable(dataset, cfg.seed) if self.iterable else SeededDataset(dataset, cfg.seed)
        self.loss_fn = loss_fn
        self.collate_fn = collate_fn
        self.out = Path(cfg.out)
        self.bf16 = cfg.bf16 if cfg.bf16 is not None else self.device.type == "cuda"
        self.given = model
        self.fsdp = cfg.fsdp and is_distributed()
        if self.fsdp:
            # fully_shard works in place and cannot be undone: shard a copy, so `model` can take the result whole.
            self.model = copy.deepcopy(model)
            self.whole = fully_shard_model(self.model, self.device)
            self.ddp = self.model
        else:
            self.model = model.to(self.device)
            self.whole = []
            self.ddp = nn.parallel.DistributedDataParallel(self.model) if is_distributed() else self.model
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, cfg.weight_decay, cfg.lr_scale), lr=cfg.lr)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of this epoch already consumed
        self.skips = SkipCounter()
        self.history: list[dict[str, float]] = []
        cap = cfg.steps_per_epoch * cfg.grad_accum if cfg.steps_per_epoch else None
        if self.iterable:
            if cap is None:
                raise TrainingError("an iterable dataset has no length: set train.steps_per_epoch")
            self.batches_per_epoch = cap
        else:
            per_rank = len(dataset) // world_size() // cfg.batch_size  # type: ignore[arg-type]
            if per_rank == 0:
                raise TrainingError(
                    f"{len(dataset)} samples cannot fill one batch of {cfg.batch_size} on "  # type: ignore
                    f"{world_size()} rank(s)"
                )
            self.batches_per_epoch = min(per_rank, cap or per_rank)

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Path]:
        """Checkpoints in the output folder, oldest first."""
        return sorted(self.out.glob("checkpoint-*.pt"), key=lambda p: int(p.stem.split("-")[1]))

    def save(self) -> Path:
        """Write a checkpoint atomically (rank 0) and keep the newest `keep`; every rank must call it."""
        path = self.out / f"checkpoint-{self.step:08d}.pt"
        # Full (unsharded) state keyed by parameter name, gathered to rank 0's CPU: the same file under FSDP, DDP
        # or one process, so a run can resume under any of them.
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.model, options=full)
        optimizer_state = get_optimizer_state_dict(self.model, self.optimizer, options=full)
        if rank() == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            state = {
                "model": model_state,
                "optimizer": optimizer_state,
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "rng": _rng_state(),
                "skips": self.skips.as_dict(),
                "config": asdict(self.cfg),
                "samples": self._samples(),
            }
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
            for old in self.checkpoints()[: -self.cfg.keep]:
                old.unlink()
        if is_distributed():
            dist.barrier()
        return path

    def _samples(self) -> int | None:
        """Samples in the dataset (None for a stream): a resumed run must see the same data."""
        return None if self.iterable else len(self.dataset)

    def _load_newest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest readable checkpoint and its state; an unreadable newer one is passed over with a line."""
        found = self.checkpoints()
        bad: list[str] = []
        for path in reversed(found):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - a truncated or corrupt file, whatever torch raises
                bad.append(f"{path.name} ({type(e).__name__})")
                continue
            if bad and rank() == 0:
                print(
                    f"blip: cannot read {', '.join(bad)}: truncated or corrupt; resuming from the previous "
                    f"good checkpoint, {path.name}",
                    file=sys.stderr,
                )
            return path, state
        if bad:
            raise TrainingError(
                f"no checkpoint in {self.out} can be read ({', '.join(bad)}); remove them to start over"
            )
        return None

    def _check_same_recipe(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse a resume whose data or batching changed (it would not continue the same run); warn about a
        changed optimisation (a lower lr after a divergence is a normal reason to resume)."""
        then, now = state.get("config", {}), asdict(self.cfg)

        def differences(names: set[str]) -> list[str]:
            return [
                f"train.{k}: {then[k]!r} then, {now[k]!r} now" for k in sorted(names) if k in then and then[k] != now[k]
            ]

        refused = differences(_SAME_RUN)
        if state.get("samples") is not None and state["samples"] != self._samples():
            refused.append(f"data: {state['samples']} samples then, {self._samples()} now")
        if refused:
            raise TrainingError(
                f"{path.name} was written by a different recipe ({'; '.join(refused)}): resume "
                f"with the recipe the run started with, or train into a new out folder"
            )
        warned = differences(_SAME_SCHEDULE)
        if warned and rank() == 0:
            print(f"blip: resuming {path.name} with a changed schedule ({'; '.join(warned)})", file=sys.stderr)

    def resume(self) -> bool:
        """Load the newest readable checkpoint if there is one; True when resumed."""
        newest = self._load_newest()
        if newest is None:
            return False
        path, state = newest
        self._check_same_recipe(path, state)
        # set_model_state_dict shards a shared parameter (the pretraining decoder's modules shared with the
        # encoder) under its first name only, and fails copying the whole tensor under another: load each once.
        aliases = _aliases(self.model)
        loaded = {k: v for k, v in state["model"].items() if k not in aliases}
        missing, unexpected = set_model_state_dict(
            self.model, loaded, options=StateDictOptions(full_state_dict=True, strict=False)
        )
        if set(missing) - aliases or unexpected:
            raise TrainingError(
                f"{path} does not fit the model: missing {sorted(set(missing) - aliases)}, "
                f"unexpected {sorted(unexpected)}"
            )
        full = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=full)
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        _set_rng_state(state["rng"])
        self.skips.load(state["skips"])
        self._truncate_log()
        return True

    # ------------------------------------------------------------------ logging
    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint we resume from (a killed run wrote them)."""
        log = self.out / "metrics.jsonl"
        if rank() != 0 or not log.exists():
            return
        keep = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
        log.write_text("".join(line + "\n" for line in keep))

    def _log(self, record: dict[str, float]) -> None:
        if rank() != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step":
                    self._tb.add_scalar(k, v, record["step"])

    # ------------------------------------------------------------------ the loop
    def _batches(self) -> Iterator[dict[str, Any]]:
        """The rest of this epoch's batches: from the position of a resumed run, at most `batches_per_epoch`,
        and only while every rank has one (an iterable's ranks may run dry at different batches)."""
        cfg = self.cfg
        if self.iterable:
            self.dataset.set_epoch(self.epoch)
            sampler, skip = None, self.batch_in_epoch  # a stream cannot seek: draw and drop what was consumed
        else:
            sampler = EpochSampler(
                len(self.dataset), cfg.seed, self.epoch, self.batch_in_epoch * cfg.batch_size, cfg.batch_size
            )
            skip = 0
        loader = DataLoader(
            self.dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            collate_fn=self.collate_fn,
            generator=torch.Generator().manual_seed(cfg.seed + self.epoch),
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        batches = itertools.islice(loader, skip, skip + self.batches_per_epoch - self.batch_in_epoch)
        for batch in itertools.chain(batches, [None]):
            if self.iterable and is_distributed():  # map-style ranks always have equal batches (EpochSampler)
                have = torch.tensor([batch is not None], dtype=torch.int32)
                dist.all_reduce(have, op=dist.ReduceOp.MIN)
                if not have:
                    return
            if batch is None:
                return
            yield batch

    def _usable(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        """Count the batch's skipped samples; cut it to the size every rank has (all-rank ITC/ITM need equal
        batches); None when a rank has nothing left, so that every rank skips the step together."""
        for reason, message in batch["skipped"]:
            self.skips.skip(reason, message)
        self.skips.ok(batch["size"])
        seen = self.skips.used + self.skips.total_skipped
        if seen >= 200 and self.skips.total_skipped > 0.5 * seen:
            raise TrainingError(
                f"more than half of the samples are unusable ({self.skips.summary()}); check the data paths"
            )
        size = torch.tensor([batch["size"]])
        if is_distributed():
            dist.all_reduce(size, op=dist.ReduceOp.MIN)
        size = int(size)
        if size == 0:
            return None
        if size < batch["size"]:
            self.skips.skip("rank_balance", f"{batch['size'] - size} usable samples left out to match other ranks")
            batch = {
                k: v[:size] if isinstance(v, (torch.Tensor, list)) and k != "skipped" else v for k, v in batch.items()
            }
            batch["size"] = size
        return batch

    def _gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Reduce gradients across ranks on the last micro-step only (accumulate locally before it)."""
        if self.fsdp:
            self.model.set_requires_gradient_sync(sync)  # type: ignore[operator]
        elif is_distributed() and not sync:
            return self.ddp.no_sync()  # type: ignore[operator]
        return contextlib.nullcontext()

    def fit(self, resume: bool = True) -> list[dict[str, float]]:
        """Train to the end (or max_steps); returns the logged records of this process."""
        before, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
        fill = torch.utils.deterministic.fill_uninitialized_memory
        if self.cfg.deterministic:
            # Some backward kernels accumulate in a thread-dependent order: on CPU, indexing's backward (index_put_
            # with accumulate, behind the ITM negatives' image_embeds_all[neg_image]) adds with atomics across
            # threads unless deterministic algorithms are on.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            # Deterministic mode also NaN-fills every torch.empty, a debugging aid for kernels that read memory
            # they did not write: about 6% of the demo model's CPU step (torch.profiler), for no change in results.
            torch.utils.deterministic.fill_uninitialized_memory = False
            # Even with deterministic kernels the weights depend on the thread count (1 and 2 threads train
            # different ones): fix it, and record it in the checkpoints' config.
            self.cfg.threads = self.cfg.threads or threads
            torch.set_num_threads(self.cfg.threads)
            # Training draws (ITM negatives, dropout) from the global generators: start them from the seed, not from
            # whatever ran before in this process (a resume then restores the checkpoint's state over it).
            random.seed(self.cfg.seed)
            np.random.seed(self.cfg.seed % 2**32)
            torch.manual_seed(self.cfg.seed)
        try:
            return self._fit(resume)
        finally:
            torch.use_deterministic_algorithms(before)
            torch.utils.deterministic.fill_uninitialized_memory = fill
            torch.set_num_threads(threads)

    def _fit(self, resume: bool) -> list[dict[str, float]]:
        cfg = self.cfg
        if resume:
            self.resume()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tb")) if rank() == 0 else None
        except ImportError:
            self._tb = None
        total_steps = cfg.epochs * self.batches_per_epoch // cfg.grad_accum
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        bar = (
            Progress(total_steps, "training", unit="step", initial=self.step) if cfg.progress and rank() == 0 else None
        )
        self.model.train()
        micro = 0
        t_last = time.perf_counter()
        while self.epoch < cfg.epochs and self.step < total_steps:
            for raw in self._batches():
                self.batch_in_epoch += 1  # counts every batch drawn, so a resume starts after it
                batch = self._usable(raw)
                if batch is None:
                    continue
                info = StepInfo(self.step, self.epoch, self.batch_in_epoch - 1, self.batches_per_epoch)
                lr = lr_at(cfg, self.epoch, self.batch_in_epoch - 1, self.batches_per_epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints before lr_scale: one group
                micro += 1
                last_micro = micro % cfg.grad_accum == 0
                autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
                with self._gradient_sync(last_micro), autocast:
                    losses = self.loss_fn(self.ddp, _to(batch, self.device), info)
                    loss = losses["loss"]
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"loss is {float(loss)} at step {self.step} (epoch {self.epoch}); "
                            f"resume from the last checkpoint in {self.out} with a lower lr"
                        )
                    (loss / cfg.grad_accum).backward()
                if not last_micro:
                    continue
                if is_distributed():
                    average_gradients(self.whole)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                now = time.perf_counter()
                record = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "lr": lr,
                    **{k: float(v.detach()) for k, v in losses.items()},
                    "samples_per_s": cfg.batch_size * cfg.grad_accum * world_size() / (now - t_last),
                }
                t_last = now
                self.history.append(record)
                if self.step % cfg.log_every == 0 or self.step == total_steps:
                    self._log(record)
                if bar is not None:
                    bar.update(1, loss=f"{record['loss']:.3f}", samples_per_s=f"{record['samples_per_s']:.1f}")
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
                if self.step >= total_steps:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
        if bar is not None:
            bar.close()
        if self.step == 0:
            seen = self.skips.used + self.skips.total_skipped
            raise TrainingError(
                f"{self.skips.total_skipped} of {seen} samples were unusable ({self.skips.summary()})"
                f" and no training step ran; check the data paths and image_root"
            )
        if not self.checkpoints() or int(self.checkpoints()[-1].stem.split("-")[1]) != self.step:
            self.save()
        if self.fsdp:
            self.given.load_state_dict(get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True)))
        if self.skips.total_skipped and rank() == 0:
            print(f"blip: {self.skips.summary()}", file=sys.stderr)
        return self.history


def _aliases(model: nn.Module) -> set[str]:
    """State-dict names of parameters and buffers that are also reachable under an earlier name."""
    first: set[int] = set()
    aliases = set()
    for name, t in itertools.chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    ):
        if id(t) in first:
            aliases.add(name)
        first.add(id(t))
    return aliases


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
