"""Data-parallel distillation: `--nproc N` relaunches through torchrun; each worker joins
the process group (NCCL on GPU, gloo on CPU) and runs the same loop on its slice. When a worker
dies, torchrun restarts them all and they resume from the last snapshot."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tha.models.errors import ThaError

MAX_RESTARTS = 2  # a crashed worker (a killed process, a dropped connection) costs the work since the last snapshot


def launch(config_path: Path, resume: bool, nproc: int, overrides: list[str]) -> None:
    """Run ``nproc`` workers on this machine through torchrun and wait for them."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--max-restarts={MAX_RESTARTS}", "-m", "tha.train.ddp", str(config_path), *(["--resume"] if resume else []), *overrides]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if result.returncode != 0:
        raise ThaError(f"distributed distillation failed (a worker exited with {result.returncode}); "
                       "see the worker output above")


def worker(argv: list[str]) -> None:
    """One torchrun worker: join the group, distill, leave."""
    from tha.train.config import load_config
    from tha.train.distill import World, distill, resolve_device
    from tha.train.snapshot import SNAPSHOT

    args = [a for a in argv if a != "--resume"]
    config = load_config(args[0], args[1:])
    # a restarted worker continues this launch's own run, if it got as far as a snapshot
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    resume = "--resume" in argv or (restarts > 0 and (config.output / SNAPSHOT).is_file())  # distill reads it
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # torchrun's workers share its store across restarts: a prefix per attempt keeps the new
    # group's keys apart from the dead one's (without it a restarted gloo group hung forming).
    # Older torchrun (2.4) hosts no store for its workers: rank 0 hosts it, else all wait forever.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.PrefixStore(f"tha/attempt_{restarts}", dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, is_master=not agent_store and rank == 0))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=rank, world_size=size)
    try:
        distill(config, resume, World(rank, size, device))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        worker(sys.argv[1:])
    except ThaError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl+C reaches every worker; the launcher says how to resume
        sys.exit(130)
