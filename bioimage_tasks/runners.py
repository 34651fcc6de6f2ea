"""Backend choices: the `job_type`s and one typed config dataclass per backend (threads, a
local Dask cluster, SLURM jobs through dask-jobqueue, an existing scheduler), checked before any
work starts. Starting them is backends.py; neither knows Prefect."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from bioimage_tasks.errors import ParameterError

JOB_TYPES = ("local", "subprocess", "slurm", "dask")


@dataclass(frozen=True)
class RunnerConfig:
    """Settings every backend shares. `blocks_per_task` fixes the batch size (default: chosen from
    the block count and workers, see `engine.plan_batches`). A Dask backend that has had no
    worker for `worker_timeout` seconds (all killed, or jobs stuck in a queue) fails the run with
    a clear error instead of waiting forever; raise it where SLURM queues are slow.

    A batch that raises (an I/O error, a lost worker) is retried `retries` times with exponential
    backoff from `retry_delay` seconds; a retry only redoes the blocks not yet recorded as done.
    Finished batches are cached by Prefect under `result_storage`: a folder, a saved Prefect
    storage block's slug ("remote-file-system/lab-results"), or a `WritableFileSystem` block such
    as `RemoteFileSystem(basepath="s3://lab/prefect-results")`. Default: a folder next to a local
    output, which SLURM nodes reach whenever they reach the output; none for an output on object
    storage, whose block records alone make reruns skip finished blocks.

    `memory_budget` (bytes) caps what one worker holds for one block: its input, the kernel's
    temporaries, the next block's read and the last block's write. Default block shapes shrink
    to fit it, and a chunk or shard that needs more is computed in pieces by one task.

    `write_limit` names a Prefect global concurrency limit (`prefect gcl create NAME --limit N`):
    at most N blocks then write at once across every worker and run that names it (throttle.py)."""

    blocks_per_task: int | None = None
    worker_timeout: float = 900.0
    retries: int = 2
    retry_delay: float = 2.0
    result_storage: Any = None  # a folder, a block slug, or a Prefect WritableFileSystem
    memory_budget: int = 2**30
    write_limit: str | None = None

    def __post_init__(self) -> None:
        if self.blocks_per_task is not None and self.blocks_per_task < 1:
            raise ParameterError(
                f"job_config.blocks_per_task must be >= 1, got {self.blocks_per_task}"
            )
        if self.worker_timeout <= 0:
            raise ParameterError(
                f"job_config.worker_timeout must be > 0 seconds, got {self.worker_timeout}"
            )
        if not isinstance(self.memory_budget, int) or self.memory_budget < 2**20:
            raise ParameterError(
                "job_config.memory_budget must be an integer of at least 2**20 bytes, got "
                f"{self.memory_budget!r}"
            )
        if self.retries < 0 or self.retry_delay < 0:
            raise ParameterError(
                "job_config.retries and retry_delay must be >= 0, got "
                f"{self.retries}, {self.retry_delay}"
            )

    def shared(self) -> dict:
        """The RunnerConfig fields, to carry them over into a backend's own config type."""
        return {f.name: getattr(self, f.name) for f in fields(RunnerConfig)}


@dataclass(frozen=True)
class LocalClusterConfig(RunnerConfig):
    """job_type="subprocess": a distributed.LocalCluster of `num_workers` processes on this
    machine."""

    threads_per_worker: int = 1
    memory_limit: str = "auto"


@dataclass(frozen=True)
class SlurmConfig(RunnerConfig):
    """job_type="slurm": Dask workers as SLURM jobs (dask-jobqueue), `num_workers` of them at most.

    `setup` lines run in each job before the worker starts (e.g. `module load ...`, `source
    venv/bin/activate`); `python` is the interpreter on the nodes (default: this one). Jobs scale
    adaptively between `min_jobs` and `num_workers`, so killed or expired jobs are replaced."""

    partition: str | None = None
    walltime: str = "01:00:00"
    memory: str = "4GB"
    cores: int = 1
    account: str | None = None
    qos: str | None = None
    extra_directives: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    python: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    min_jobs: int = 1
    job_name: str = "bioimage-tasks"

    def cluster_kwargs(self) -> dict:
        directives = list(self.extra_directives) + ([f"--qos={self.qos}"] if self.qos else [])
        kwargs = {
            "queue": self.partition,
            "account": self.account,
            "walltime": self.walltime,
            "memory": self.memory,
            "cores": self.cores,
            "processes": 1,
            "job_extra_directives": directives,
            "job_script_prologue": list(self.setup),
            "python": self.python or sys.executable,
            "log_directory": self.log_directory,
            "interface": self.interface,
            "job_name": f"{self.job_name}-{uuid.uuid4().hex[:8]}",
            "scheduler_options": {"dashboard_address": ":0"},
        }
        return {key: value for key, value in kwargs.items() if value is not None}


@dataclass(frozen=True)
class DaskConfig(RunnerConfig):
    """job_type="dask": an existing Dask scheduler (Kubernetes, dask-gateway, a shared cluster).
    Its workers need this package installed and `PREFECT_API_URL` pointing at the flow's API."""

    address: str = field(default="")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.address:
            raise ParameterError(
                "DaskConfig.address must name the scheduler, e.g. 'tcp://host:8786'"
            )


CONFIG_TYPES: dict[str, type[RunnerConfig]] = {
    "local": RunnerConfig,
    "subprocess": LocalClusterConfig,
    "slurm": SlurmConfig,
    "dask": DaskConfig,
}


def check_backend(job_type: str, num_workers: int, job_config: RunnerConfig | None) -> RunnerConfig:
    """Validate the backend parameters before any work starts; return the effective config."""
    if job_type not in JOB_TYPES:
        raise ParameterError(f"job_type must be one of {JOB_TYPES}, got {job_type!r}")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise ParameterError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    expected = CONFIG_TYPES[job_type]
    if isinstance(job_config, dict):  # from a deployment or the API: JSON parameters
        try:
            job_config = expected(**job_config)
        except TypeError as error:
            raise ParameterError(
                f"job_config for job_type={job_type!r} takes {expected.__name__} fields: {error}"
            ) from None
    config = RunnerConfig() if job_config is None else job_config
    if type(config) is RunnerConfig and expected is not RunnerConfig:
        config = expected(**config.shared())  # DaskConfig: asks for the address
    if type(config) is not expected:
        raise ParameterError(
            f"job_config must be a {expected.__name__} for job_type={job_type!r}, "
            f"got {job_config!r}"
        )
    return config


def describe_backend(job_type: str, num_workers: int) -> str:
    """'local: 2 threads', 'subprocess: 4 worker processes', 'slurm: up to 8 SLURM jobs', ..."""
    units = {
        "local": "threads",
        "subprocess": "worker processes",
        "slurm": "SLURM jobs (adaptive)",
        "dask": "workers wanted",
    }
    return f"{job_type}: {num_workers} {units[job_type]}"
