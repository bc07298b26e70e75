"""Training on several processes: ``torchrun`` starts them, mmengine's DDP keeps them in step.

``nailseg train --nproc N`` hands itself to ``torch.distributed.run`` (torchrun's own entry point),
which starts N copies of ``python -m nailseg train --distributed ...`` on this machine; a cluster
starts the same workers with ``torchrun --nnodes ...`` or Slurm's ``srun`` (``docs/scaling.md``).
Each worker runs mmengine's ``Runner`` with a ``launcher``, which wraps the model in DDP and shards
the training photos by rank; rank 0 alone writes checkpoints and logs.

With GPUs, that is mmengine's default: NCCL, one process per GPU (``LOCAL_RANK``). Without, the
workers are CPU processes on gloo, and two things of mmengine 0.10.7 would stop them:
``init_dist`` calls ``torch.cuda.set_device`` whatever the backend, and the Runner wraps the model
with ``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU module. :func:`configure` names a
wrapper config without ``device_ids``, and :func:`init_cpu_process_group` opens the gloo group
itself, before the Runner, which then skips ``init_dist`` (it only initialises when no group exists).
"""

from __future__ import annotations

import datetime as dt
import os
import sys

LAUNCHERS = ("pytorch", "slurm")  # mmengine's names: torchrun's environment, or Slurm's srun


def gpu_count() -> int:
    """GPUs torch can use here (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def world_size(launcher: str | None) -> int:
    """Processes in the whole run, from the launcher's environment (1 when not distributed)."""
    if launcher == "pytorch":
        return int(os.environ.get("WORLD_SIZE", 1))
    if launcher == "slurm":
        return int(os.environ.get("SLURM_NTASKS", 1))
    return 1


def rank() -> int:
    """This process's global rank (0 when not distributed, or before the workers start)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def configure(cfg, launcher: str) -> None:
    """Make ``cfg`` a distributed run started by ``launcher`` (``pytorch`` or ``slurm``).

    With GPUs mmengine's defaults stand (NCCL, DDP on GPU ``LOCAL_RANK``). Without, the backend
    becomes gloo and the DDP wrapper gets no ``device_ids``, as DDP requires for a CPU module.

    Raises:
        ValueError: an unknown launcher, or Slurm's launcher on a machine without GPUs (mmengine's
            Slurm set-up selects a GPU; run torchrun under ``srun`` instead).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    cfg.launcher = launcher
    if gpu_count():
        return
    if launcher == "slurm":
        raise ValueError(
            "--launcher slurm needs GPUs (mmengine selects one per task); on CPU nodes run "
            "`srun torchrun ... -m nailseg train --distributed` instead (docs/scaling.md)"
        )
    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    # The Runner adds device_ids=[LOCAL_RANK] only when the wrapper config does not name them;
    # None is DDP's value for a module on the CPU.
    cfg.model_wrapper_cfg = dict(
        type="MMDistributedDataParallel",
        device_ids=None,
        broadcast_buffers=False,  # mmengine's own choice for its default wrapper
        find_unused_parameters=cfg.get("find_unused_parameters", False),
    )


def init_cpu_process_group(cfg) -> None:
    """Open the gloo process group of a CPU run from torchrun's environment (``MASTER_ADDR``...).

    A no-op with GPUs, outside a distributed run, or when a group is already open: the Runner's
    ``init_dist`` would select a CUDA device first, which fails on a machine without one.
    """
    import torch.distributed as dist

    if cfg.get("launcher", "none") == "none" or gpu_count() or dist.is_initialized():
        return
    dist_cfg = dict(cfg.get("env_cfg", {}).get("dist_cfg", {}))
    timeout = dist_cfg.get("timeout")
    dist.init_process_group(
        backend=dist_cfg.get("backend", "gloo"), timeout=dt.timedelta(seconds=timeout) if timeout else None
    )


def launch(argv: list[str], nproc: int, share_cores: bool = True) -> int:
    """Run ``python -m nailseg <argv> --distributed`` in ``nproc`` processes on this machine.

    Through ``torch.distributed.run`` (torchrun) with ``--standalone`` (a local rendezvous on a free
    port). On CPU, unless ``OMP_NUM_THREADS`` is set already (torchrun would give each one thread),
    each worker gets an equal share of the cores for its threads with ``share_cores``, else as
    many threads as one process would use: a CPU's sums then add up in the same order, and the
    results are those of one process to the last digit.

    Args:
        argv: the ``nailseg`` arguments, subcommand first (``["train", "--data", ...]``).
        nproc: worker processes, at most one per GPU where there are GPUs.
        share_cores: split the cores among the workers (faster) rather than give each all of them.

    Returns:
        0 when every worker exited 0, else 1 (torchrun's report of the failure is printed).

    Raises:
        ValueError: ``nproc`` below 1, or above the GPUs there are.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    gpus = gpu_count()
    if nproc < 1 or (gpus and nproc > gpus):
        raise ValueError(f"--nproc must be between 1 and {gpus or 'any number'} here, got {nproc}")
    if not gpus:
        import torch

        threads = max(1, (os.cpu_count() or 1) // nproc) if share_cores else torch.get_num_threads()
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    worker = [argv[0], "--distributed", *argv[1:]]
    # "--" ends torchrun's own options: without it, our --nproc in the workers' arguments would be
    # refused by torchrun's parser as an ambiguous abbreviation of its --nproc-per-node.
    try:
        torchrun(["--standalone", "--nproc-per-node", str(nproc), "--module", "--", "nailseg", *worker])
    except ChildFailedError as err:
        print(f"error: {err.format_msg()}", file=sys.stderr)
        return 1
    return 0
