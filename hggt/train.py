"""One GAN training loop for the enhancers (×1) and the Real-ISR models (×4).

Read top to bottom: per iteration, build the batch for that iteration (a pure function of the
seed and the iteration number), pass it through the training-pair pool, take a generator step
(L1 + perceptual + GAN, plus any extra generator terms, e.g. the negative-GT loss), take a
discriminator step, step the schedulers, update the EMA. Everything needed to continue —
networks, optimisers, schedulers, EMA, pool — is checkpointed, so a killed run resumes at the
last checkpoint and finishes with the same iteration count and the same weights.

Variants are data (STYLE rule 3): no discriminator and zero perceptual/GAN weights give the
L1-only pre-training; ``extra_g_loss`` adds terms without subclassing.

Data parallel (``world_size > 1``, under ``torchrun``): every rank draws the same *global* batch
and passes it through its own copy of the pool (so every pool holds the same global contents),
then keeps its slice ``rank``; G and D are wrapped in ``DistributedDataParallel``, whose gradient
average over equal slices equals the single-process gradient of the global batch mean (every
loss here is a batch mean, the negative term included). Only rank 0 logs, validates and writes
checkpoints. The result therefore does not depend on the number of processes, up to float
summation order.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hggt.io import atomic_write_bytes
from hggt.losses import PerceptualLoss, gan_loss, l1_loss
from hggt.seeding import torch_generator_for

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """One training batch: ``lq`` input, ``gt`` target, and any aligned extra tensors.

    Every tensor shares the batch dimension; all of them travel through the pool together.
    """

    lq: torch.Tensor  # (B, 3, h, w)
    gt: torch.Tensor  # (B, 3, H, W): target for L1, perceptual and the discriminator's real input
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"lq": self.lq, "gt": self.gt, **self.extras}

    @staticmethod
    def from_tensors(t: Mapping[str, torch.Tensor]) -> Batch:
        rest = {k: v for k, v in t.items() if k not in ("lq", "gt")}
        return Batch(lq=t["lq"], gt=t["gt"], extras=rest)


@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs to know; built by a stage from its params section."""

    iterations: int
    lr_g: float
    lr_d: float
    betas: tuple[float, float]
    milestones: tuple[int, ...]
    gamma: float
    loss_l1: float
    loss_perceptual: float
    loss_gan: float
    ema_decay: float = 0.0  # 0: no EMA (the enhancers, SPEC §3)
    l1_warmup: int = 0  # first iterations with L1 only (no perceptual, GAN or D step); paper: 0
    queue_size: int = 0  # 0: no training-pair pool
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 10
    val_every: int = 0  # 0: ``validate`` only at the end (when given)
    seed: int = 0
    name: str = "train"  # seeds the pool's shuffles; also the run's identity in checkpoints
    amp_bf16: bool = False  # used on CUDA only
    channels_last: bool = False
    compile: bool = False


@dataclass
class TrainResult:
    generator: nn.Module
    generator_ema: nn.Module | None
    iterations: int
    resumed_from: int
    last_metrics: dict[str, float]
    seconds: float
    history: tuple[tuple[int, dict[str, float]], ...] = ()


def auto_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else is taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --------------------------------------------------------------------------- pool


class PairPool:
    """The training-pair pool (BasicSR ``_dequeue_and_enqueue``; SPEC §3 step 8, §5 step 8).

    While filling, batches pass through unchanged and are stored. Once full, the pool is
    shuffled, its first B entries are handed out and replaced by the incoming batch. The
    shuffle for iteration ``it`` comes from a generator seeded by (seed, name, "pool", it),
    so the pool's only state is its contents.
    """

    def __init__(self, size: int, seed: int, name: str) -> None:
        self.size = size
        self.seed = seed
        self.name = name
        self.store: dict[str, torch.Tensor] = {}
        self.filled = 0

    def __call__(self, batch: Batch, it: int) -> Batch:
        if self.size <= 0:
            return batch
        t = batch.tensors()
        b = t["lq"].shape[0]
        if self.size % b:
            raise ValueError(f"pool size {self.size} must be a multiple of the batch size {b}")
        if not self.store:
            self.store = {k: v.new_empty((self.size, *v.shape[1:])) for k, v in t.items()}
        if self.filled < self.size:
            for k, v in t.items():
                self.store[k][self.filled : self.filled + b] = v.detach()
            self.filled += b
            return batch
        gen = torch_generator_for(self.seed, self.name, "pool", it)
        # non_blocking: a blocking host→device copy would wait for the GPU every iteration.
        perm = torch.randperm(self.size, generator=gen).to(t["lq"].device, non_blocking=True)
        out = {}
        for k, v in t.items():
            shuffled = self.store[k][perm]
            out[k] = shuffled[:b].clone()
            shuffled[:b] = v.detach()
            self.store[k] = shuffled
        return Batch.from_tensors(out)

    def state_dict(self) -> dict[str, Any]:
        return {"filled": self.filled, "store": {k: v.cpu() for k, v in self.store.items()}}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.filled = int(state["filled"])
        self.store = {k: v.to(device) for k, v in state["store"].items()}


# --------------------------------------------------------------------------- EMA


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema ← decay·ema + (1 − decay)·model`` for parameters; buffers are copied."""
    pe, pm = list(ema.parameters()), [p.detach() for p in model.parameters()]
    if len(pe) != len(pm):
        raise ValueError(f"EMA has {len(pe)} parameters, the model {len(pm)}")
    if pe:
        # One fused call instead of a kernel launch per tensor; same arithmetic as lerp_.
        torch._foreach_lerp_(pe, pm, 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


# --------------------------------------------------------------------------- data parallel


def shard(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rank ``rank``'s contiguous slice of a global batch (every tensor along dim 0).

    Raises:
        ValueError: the global batch size is not a multiple of ``world_size``.
    """
    if world_size == 1:
        return batch
    t = batch.tensors()
    b = t["lq"].shape[0]
    if b % world_size:
        raise ValueError(f"global batch size {b} is not a multiple of world_size {world_size}")
    n = b // world_size
    return Batch.from_tensors({k: v[rank * n : (rank + 1) * n] for k, v in t.items()})


def _no_forward_buffer_sync() -> dict[str, bool]:
    """DDP keyword that skips the per-forward buffer broadcast: ``forward_sync_buffers`` where
    torch has it (it deprecates ``broadcast_buffers``), else ``broadcast_buffers``. G's buffers
    are constants built identically on every rank, so either is safe."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return {key: False}


def _global_means(sums: dict[str, torch.Tensor], world_size: int) -> dict[str, torch.Tensor]:
    """Average per-rank loss sums over ranks (one all-reduce, at log steps only)."""
    if world_size == 1 or not sums:
        return sums
    keys = sorted(sums)
    stacked = torch.stack([sums[k].reshape(()) for k in keys])
    tdist.all_reduce(stacked)
    return dict(zip(keys, (stacked / world_size).unbind(), strict=True))


# --------------------------------------------------------------------------- checkpoints


def _unwrap(m: nn.Module) -> nn.Module:
    # DDP and torch.compile wrap the module; checkpoints store the plain one.
    m = getattr(m, "module", m)
    return getattr(m, "_orig_mod", m)


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically ``torch.save`` a dict (temp file, then rename)."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def history_csv(history: Sequence[tuple[int, Mapping[str, float]]]) -> str:
    """``TrainResult.history`` as CSV: ``step`` and one column per logged key (sorted), one row
    per step in order (a log window and a validation at the same step share a row; blank where
    a key was not logged at that step). Floats as ``repr``: the file is byte-stable."""
    keys = sorted({k for _, m in history for k in m})
    rows: dict[int, dict[str, float]] = {}
    for it, m in history:
        rows.setdefault(int(it), {}).update(m)
    lines = [",".join(("step", *keys))]
    for it in sorted(rows):
        lines.append(
            ",".join((str(it), *(repr(float(rows[it][k])) if k in rows[it] else "" for k in keys)))
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the loop


def train(
    generator: nn.Module,
    discriminator: nn.Module | None,
    perceptual: PerceptualLoss | None,
    next_batch: Callable[[int], Batch],
    cfg: LoopConfig,
    device: torch.device,
    checkpoint_path: Path,
    meta: Mapping[str, Any] | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    extra_g_loss: Callable[[torch.Tensor, Batch], dict[str, torch.Tensor]] | None = None,
    validate: Callable[[int, nn.Module], Mapping[str, float]] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> TrainResult:
    """Train ``generator`` (and ``discriminator``) for ``cfg.iterations`` iterations.

    Args:
        generator, discriminator: CPU float32 modules; moved to ``device`` here. No
            discriminator (or ``cfg.loss_gan == 0``) trains without the adversarial term.
        perceptual: the VGG perceptual loss, or None when ``cfg.loss_perceptual == 0``.
        next_batch: iteration → Batch on ``device``; must be a pure function of the iteration.
        checkpoint_path: where the resumable state lives; resumed from when it exists and its
            ``meta`` equals ``meta``. Written every ``cfg.checkpoint_every`` iterations and at the end.
        meta: identity of the run (config, architecture); stored in every checkpoint.
        on_log: called every ``cfg.log_every`` iterations with the window's mean losses and lrs
            (means over all ranks), and after each validation with its metrics. Every such call
            is also kept in ``TrainResult.history``, which checkpoints carry: a resumed run
            returns the history an uninterrupted one would.
        extra_g_loss: ``(sr, batch) -> {name: weighted loss}`` added to the generator loss.
        validate: ``(iteration, model) -> metrics``, called every ``cfg.val_every`` iterations
            and at the end with the EMA generator (the generator when there is no EMA) in eval
            mode; its metrics go to ``on_log``. Must not draw from shared random state.
        rank, world_size: this process's place in a ``torch.distributed`` group (already
            initialised when ``world_size > 1``); ``next_batch`` returns the global batch and
            the loop keeps rank ``rank``'s slice. Rank 0 alone logs, validates and writes.

    Returns:
        The trained generator (and its EMA), on CPU, in eval mode.
    """
    meta = dict(meta or {})
    distributed = world_size > 1
    if distributed and not (tdist.is_available() and tdist.is_initialized()):
        raise RuntimeError(f"world_size={world_size} needs an initialised torch.distributed group")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    main_rank = rank == 0
    use_gan = discriminator is not None and cfg.loss_gan > 0
    if cfg.loss_perceptual > 0 and perceptual is None:
        raise ValueError("loss_perceptual > 0 needs a PerceptualLoss")
    g = generator.to(device)
    d = discriminator.to(device) if use_gan else None
    pl = perceptual.to(device) if perceptual is not None and cfg.loss_perceptual > 0 else None
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    g = g.to(memory_format=memory_format)
    if d is not None:
        d = d.to(memory_format=memory_format)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False) if cfg.ema_decay > 0 else None

    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=cfg.betas)
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, list(cfg.milestones), cfg.gamma)
    opt_d = (
        torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=cfg.betas) if d is not None else None
    )
    sched_d = (
        torch.optim.lr_scheduler.MultiStepLR(opt_d, list(cfg.milestones), cfg.gamma)
        if opt_d
        else None
    )
    pool = PairPool(cfg.queue_size, cfg.seed, cfg.name)

    start_it = 0
    logs: dict[str, Any] = {"history": [], "last": {}, "last_val": {}, "sums": {}, "counts": {}}
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        if (
            state.get("meta") == meta
            and state.get("loop") == dataclasses.asdict(cfg)
            and "logs" in state
        ):
            g.load_state_dict(state["g"])
            opt_g.load_state_dict(state["opt_g"])
            sched_g.load_state_dict(state["sched_g"])
            if d is not None:
                d.load_state_dict(state["d"])
                opt_d.load_state_dict(state["opt_d"])
                sched_d.load_state_dict(state["sched_d"])
            if g_ema is not None:
                g_ema.load_state_dict(state["g_ema"])
            pool.load_state_dict(state["pool"], device)
            start_it = int(state["iteration"])
            logs = state["logs"]
            log.info("%s: resuming from iteration %d (%s)", cfg.name, start_it, checkpoint_path)
        elif main_rank:
            log.warning(
                "%s: %s belongs to another configuration; starting afresh",
                cfg.name,
                checkpoint_path,
            )

    if distributed:
        # Wrapped after loading: DDP broadcasts rank 0's parameters and buffers here; G has no
        # running buffers, D's spectral-norm vectors are re-broadcast before every forward.
        ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
        g = DistributedDataParallel(g, device_ids=ids, **_no_forward_buffer_sync())
        if d is not None:
            d = DistributedDataParallel(d, device_ids=ids)
    # The generator step's adversarial term runs D with frozen parameters: no gradient to
    # synchronise, so it bypasses the DDP wrapper (whose reducer expects a backward per forward).
    d_frozen = _unwrap(d) if d is not None else None

    def checkpoint(it: int) -> None:
        # Every rank gets here at the same iteration: the open log window's sums are averaged
        # over ranks (a resumed rank restores that average, which leaves the next mean as it
        # would have been), then rank 0 writes.
        window = _global_means(sums, world_size)
        if not main_rank:
            return
        state = {
            "iteration": it,
            "meta": meta,
            "loop": dataclasses.asdict(cfg),
            "g": _unwrap(g).state_dict(),
            "opt_g": opt_g.state_dict(),
            "sched_g": sched_g.state_dict(),
            "pool": pool.state_dict(),
        }
        if d is not None:
            state.update(
                d=_unwrap(d).state_dict(), opt_d=opt_d.state_dict(), sched_d=sched_d.state_dict()
            )
        if g_ema is not None:
            state["g_ema"] = g_ema.state_dict()
        state["logs"] = {
            "history": history,
            "last": last,
            "last_val": last_val,
            # The open log window, so that the first mean after a resume is the same mean.
            "sums": {k: v.detach().to("cpu") for k, v in window.items()},
            "counts": counts,
        }
        save_checkpoint(checkpoint_path, state)

    g_fwd = torch.compile(g) if cfg.compile else g
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.amp_bf16 and device.type == "cuda"
        else nullcontext()
    )
    history: list[tuple[int, dict[str, float]]] = [(int(i), dict(m)) for i, m in logs["history"]]
    sums: dict[str, torch.Tensor] = {k: v.to(device) for k, v in logs["sums"].items()}
    counts: dict[str, int] = dict(logs["counts"])
    last: dict[str, float] = dict(logs["last"])
    last_val: dict[str, float] = dict(logs["last_val"])

    def emit(it: int, metrics: dict[str, float]) -> None:
        history.append((it, dict(metrics)))
        if on_log is not None:
            on_log(it, metrics)

    def run_validation(it: int) -> None:
        nonlocal last_val
        model = g_ema if g_ema is not None else _unwrap(g)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            last_val = {k: float(v) for k, v in validate(it, model).items()}
        model.train(was_training)
        emit(it, last_val)

    started = time.perf_counter()
    g.train()
    if d is not None:
        d.train()
    for it in range(start_it, cfg.iterations):
        warm = it < cfg.l1_warmup  # L1 only: perceptual and adversarial terms start afterwards
        # Pool the global batch (identical on every rank), then keep this rank's slice.
        batch = shard(pool(next_batch(it), it), rank, world_size)
        lq = batch.lq.contiguous(memory_format=memory_format)
        gt = batch.gt.contiguous(memory_format=memory_format)

        # ---- generator step
        if d is not None:
            d.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        with amp:
            sr = g_fwd(lq)  # (B, 3, H, W)
            terms: dict[str, torch.Tensor] = {}
            if cfg.loss_l1 > 0:
                terms["l1"] = cfg.loss_l1 * l1_loss(sr.float(), gt)
            if pl is not None and not warm:
                terms["perceptual"] = cfg.loss_perceptual * pl(sr, gt)
            if d_frozen is not None and not warm:
                terms["gan_g"] = cfg.loss_gan * gan_loss(d_frozen(sr), True)
            if extra_g_loss is not None:
                terms.update(extra_g_loss(sr.float(), batch))
            loss_g = sum(terms.values())
        loss_g.backward()
        opt_g.step()

        # ---- discriminator step: real and fake terms backpropagated separately (SPEC §3)
        if d is not None and not warm:
            d.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            with amp:
                real = gan_loss(d(gt), True)
            real.backward()
            with amp:
                fake = gan_loss(d(sr.detach()), False)
            fake.backward()
            opt_d.step()
            terms["d_real"] = real
            terms["d_fake"] = fake
        if sched_d is not None:
            sched_d.step()
        sched_g.step()
        if g_ema is not None:
            ema_update(g_ema, _unwrap(g), cfg.ema_decay)

        # ---- bookkeeping without host syncs: sums stay on the device until a log step
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
            counts[k] = counts.get(k, 0) + 1
        done = it + 1
        if done % cfg.log_every == 0 or done == cfg.iterations:
            means = _global_means(sums, world_size)  # the only host sync: once per log window
            last = {k: float(v) / counts[k] for k, v in means.items()}
            last["lr_g"] = opt_g.param_groups[0]["lr"]
            if opt_d is not None:
                last["lr_d"] = opt_d.param_groups[0]["lr"]
            if main_rank:
                emit(done, last)
            sums, counts = {}, {}
        if validate is not None and main_rank:
            if (cfg.val_every and done % cfg.val_every == 0) or done == cfg.iterations:
                run_validation(done)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            checkpoint(done)
    if start_it < cfg.iterations or not checkpoint_path.is_file():
        checkpoint(cfg.iterations)
    if validate is not None and main_rank and not last_val:
        run_validation(cfg.iterations)  # resumed at the end: validate the final model once
    if distributed:
        tdist.barrier()  # every rank returns after rank 0 has written the final checkpoint
    g_out = _unwrap(g).to("cpu").eval()
    ema_out = g_ema.to("cpu").eval() if g_ema is not None else None
    return TrainResult(
        g_out,
        ema_out,
        cfg.iterations,
        start_it,
        {**last, **last_val},
        time.perf_counter() - started,
        tuple(history),
    )
