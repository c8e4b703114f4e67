"""Several processes, one model: PyTorch DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m cnnbench trainer.strategy=ddp ...`` starts N copies of the run. Each joins
the process group (gloo on CPUs, nccl on GPUs), trains on its shard of every global batch, and DDP averages
the gradients, so N processes at ``data.batch_size`` B train like one process at batch N x B. Rank 0 alone
evaluates, draws, writes checkpoints and results.json; the others print nothing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from cnnbench.errors import CnnbenchError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _active() -> bool:
    """Whether this process is in an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def init(strategy: str, device: torch.device) -> DistInfo:
    """Join the process group for ``trainer.strategy=ddp`` (gloo on CPU, nccl on CUDA); single: nothing."""
    if strategy != "ddp":
        return DistInfo()
    if not launched_by_torchrun():
        raise CnnbenchError("trainer.strategy=ddp runs under torchrun: torchrun --nproc_per_node=N -m cnnbench "
                            "trainer.strategy=ddp ... (or use trainer.strategy=single)")
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=attempt_store(info),
                                rank=info.rank, world_size=info.world_size)
    return info


def attempt_store(info: DistInfo) -> dist.Store:
    """torchrun's rendezvous store, with keys of this attempt only. After a restart (``torchrun --max-restarts``)
    the elastic agent's store still holds the failed attempt's process-group keys under the same names, and a rank
    that reads them before its peer has rewritten them connects to a dead process (torch 2.14: 'Connection refused',
    or a hang); ``TORCHELASTIC_RESTART_COUNT`` numbers the attempts."""
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # (else rank 0 hosts the store)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), info.world_size,
                          is_master=not agent_hosts and info.rank == 0, timeout=dist.default_pg_timeout)
    return dist.PrefixStore(f"cnnbench/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)


def device_for(info: DistInfo, device: torch.device) -> torch.device:
    """One GPU per process: under ``trainer.strategy=ddp``, ``cuda`` becomes ``cuda:<local rank>`` (also for one
    process, so that nccl knows each rank's device)."""
    if _active() and device.type == "cuda" and device.index is None:
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the processes (a no-op in a single process)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any of them (so all stop at the same step)."""
    if not _active():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(value):
    """Rank 0's ``value`` on every process (a picklable object)."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shared_run_dir(run_dir: Path) -> Path:
    """Rank 0's run directory, on every process. Hydra made one per process (each with its own time stamp):
    another rank's, holding nothing but Hydra's config copy, is removed."""
    shared = Path(broadcast(str(run_dir)))
    if shared != run_dir and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir)
    return shared


def shutdown() -> None:
    if _active():
        dist.destroy_process_group()
