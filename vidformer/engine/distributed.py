"""Process-group setup for torchrun and Slurm `srun` launches, and the few collectives the engine needs.

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT; under
`srun` (one task per GPU) the same facts come from SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID /
SLURM_STEP_TASKS_PER_NODE, and the rendezvous from MASTER_ADDR / MASTER_PORT when the job script sets
them, else from the node list. A plain `python` run is one process and needs no process group.
NCCL is used with GPUs, gloo on a CPU.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vidformer.errors import UsageError

# step ids Slurm gives the batch script, the extern step and an interactive step: no srun task has them
_SLURM_SPECIAL_STEPS = 0xFFFFFFF0


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "torchrun", "slurm" or "none"
    local_world_size: int | None = None  # processes on this node; None: all of them (one node)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def processes_per_node(self) -> int:
        return self.local_world_size or self.world_size


def detect_env(environ: dict | None = None) -> DistEnv:
    """Rank and world size from torchrun's variables, else from Slurm's (srun tasks), else one process.

    A Slurm job of several tasks whose process was not started by srun (e.g. `vidformer train` typed
    straight into the sbatch script) would wait forever for tasks that never start: that is refused.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        local = int(env["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in env else None
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun", local)
    if "SLURM_JOB_ID" not in env and "SLURM_PROCID" not in env:
        return DistEnv()
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
    if step is None or int(step) >= _SLURM_SPECIAL_STEPS:  # the batch script itself, not an srun task
        if int(env.get("SLURM_NTASKS", 1)) > 1:
            raise UsageError(
                f"this Slurm job has SLURM_NTASKS={env['SLURM_NTASKS']} tasks but this process was not started by srun "
                f"(no SLURM_STEP_ID), so the other tasks would never join; launch it as `srun vidformer train ...` "
                f"(one task per GPU), or with torchrun inside a one-task job")
        return DistEnv()
    world_size = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", 1)))
    if world_size <= 1:
        return DistEnv()
    return DistEnv(int(env["SLURM_PROCID"]), world_size, int(env.get("SLURM_LOCALID", 0)), "slurm",
                   _slurm_tasks_on_this_node(env))


def _slurm_tasks_on_this_node(env) -> int | None:
    """Tasks of this step on this node, from SLURM_STEP_TASKS_PER_NODE ('4(x2),2': 4, 4, 2) and SLURM_NODEID."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE"))
    if not spec:
        return None
    counts = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m is None:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    node = int(env.get("SLURM_NODEID", 0))
    return counts[node] if node < len(counts) else None


def first_host(nodelist: str) -> str:
    """First host of a Slurm host list: 'gpu[07-09,12],cpu1' -> 'gpu07' (what `scontrol show hostnames` prints first)."""
    m = re.match(r"([^\[,]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if m is None:
        raise UsageError(f"cannot read the Slurm node list '{nodelist}'; set MASTER_ADDR to the first node's address")
    prefix, ranges = m.groups()
    return prefix + (re.split(r"[-,]", ranges)[0] if ranges else "")


def _slurm_master_addr(env) -> str:
    """MASTER_ADDR for srun tasks: the first node of the job, from `scontrol show hostnames` where it exists."""
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise UsageError("under srun, MASTER_ADDR is not set and neither is SLURM_JOB_NODELIST; "
                         "export MASTER_ADDR (and MASTER_PORT) in the job script")
    if shutil.which("scontrol") is None:
        return first_host(nodelist)
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.split():
        raise UsageError(f"`scontrol show hostnames {nodelist}` failed ({out.stderr.strip()[:200]}); "
                         f"export MASTER_ADDR (and MASTER_PORT) in the job script")
    return out.stdout.split()[0]


def slurm_rendezvous(environ) -> None:
    """Fill MASTER_ADDR / MASTER_PORT into `environ` for srun tasks, which do not get torchrun's: the job
    script's values when it exports them, else the job's first node and a port derived from the job id."""
    if "MASTER_ADDR" not in environ:
        environ["MASTER_ADDR"] = _slurm_master_addr(environ)
    if "MASTER_PORT" not in environ:
        environ["MASTER_PORT"] = str(12000 + int(environ.get("SLURM_JOB_ID", 0)) % 20000)


def init_distributed(env: DistEnv | None = None) -> DistEnv:
    """Join the process group the launcher describes (no-op for one process); returns the environment."""
    env = env or detect_env()
    if not env.distributed or dist.is_initialized():
        return env
    if env.launcher == "slurm":
        slurm_rendezvous(os.environ)
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


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a tensor over all processes (the tensor itself with one process), in place."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value)
    return value


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
