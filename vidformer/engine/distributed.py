"""Process-group setup for torchrun and Slurm `srun` launches, and the few collectives the engine needs.

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; under `srun` (one task
per GPU) the same facts come from SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and the node list.
A plain `python` run is one process and needs no process group. NCCL is used with GPUs, gloo on a CPU.
"""

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "torchrun", "slurm" or "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_env(environ: dict | None = None) -> DistEnv:
    """Rank and world size from torchrun's variables, else from Slurm's (srun tasks), else one process."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), "slurm")
    return DistEnv()


def _slurm_master_addr(nodelist: str) -> str:
    """First host of a Slurm node list ('node[01-04]' -> 'node01'), via scontrol as Slurm documents."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def init_distributed(env: DistEnv | None = None) -> DistEnv:
    """Join the process group the launcher describes (no-op for one process); returns the environment."""
    env = env or detect_env()
    if not env.distributed or dist.is_initialized():
        return env
    if env.launcher == "slurm":
        # srun does not export torchrun's rendezvous variables; derive them (port overridable)
        os.environ.setdefault("MASTER_ADDR", _slurm_master_addr(os.environ["SLURM_JOB_NODELIST"]))
        os.environ.setdefault("MASTER_PORT", str(12000 + int(os.environ.get("SLURM_JOB_ID", 0)) % 20000))
        os.environ.update(RANK=str(env.rank), WORLD_SIZE=str(env.world_size), LOCAL_RANK=str(env.local_rank))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return env


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(env: DistEnv) -> torch.device:
    return torch.device("cuda", env.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (the tensor itself with one process)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def all_true(flag: bool, device: torch.device) -> bool:
    """True only if `flag` is true on every process (so all ranks take the same branch)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order (a one-element list with one process)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
