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
    """Settings every backend shares; the config of `job_type="local"` (threads).

    Each backend's config (`LocalClusterConfig`, `SlurmConfig`, `DaskConfig`) has these fields
    too. Every field is checked when the config is made, so a bad value fails at once, naming
    the field. A flow or deployment may pass the config as a dict of its fields.

    Attributes
    ----------
    blocks_per_task : int or None, default None
        Blocks per batch (one task, or one Prefect task in a flow): an integer >= 1. None:
        chosen from the block count and the workers: 4 batches per worker, more (of at most 64
        blocks) for large grids (`engine.plan_batches`).
    worker_timeout : float, default 900.0
        Seconds a Dask backend may have no worker at all (all killed, or SLURM jobs stuck in
        the queue) before the run fails with a clear error instead of waiting forever; > 0.
        Raise it where SLURM queues are slow.
    retries : int, default 2
        Flows only: how often a batch that raised (an I/O error, a lost worker) is retried,
        >= 0; a retry redoes only the blocks not yet recorded done.
    retry_delay : float, default 2.0
        Flows only: seconds before the first retry, doubled for each next one; >= 0.
    result_storage : str, WritableFileSystem or None, default None
        Flows only: where Prefect caches finished batches, so a rerun skips them: a folder, a
        saved Prefect storage block's slug (`"remote-file-system/lab-results"`), or a
        `WritableFileSystem` block such as `RemoteFileSystem(basepath="s3://lab/results")`.
        None: a folder next to a local output (SLURM nodes reach it whenever they reach the
        output); none for an output on object storage, whose block records alone make
        reruns skip finished blocks.
    memory_budget : int, default 2**30
        Bytes one worker may hold for one block: its input, the kernel's temporaries, the
        next block's read and the last block's write; an integer >= 2**20. Default block
        shapes shrink to fit it, and a chunk or shard that needs more is computed in pieces
        by one task.
    write_limit : str or None, default None
        The name of a Prefect global concurrency limit (`prefect gcl create NAME --limit N`):
        at most N blocks then write at once across every worker and every run that names it,
        for shared file systems that slow down under many writers (throttle.py). It must
        exist, and the run needs a Prefect API to reach it. None: no limit.

    Raises
    ------
    ParameterError
        A field is out of range; the message names it (`job_config.<field>`).

    Examples
    --------
    >>> import numpy as np
    >>> import bioimage_tasks as bt
    >>> image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    >>> config = bt.RunnerConfig(memory_budget=2**24, blocks_per_task=4)
    >>> bt.downsample(image, 4, method="max", num_workers=2, job_config=config)
    array([[27, 31],
           [59, 63]], dtype=uint16)
    >>> bt.RunnerConfig(memory_budget=1000)
    Traceback (most recent call last):
    ...
    bioimage_tasks.errors.ParameterError: job_config.memory_budget must be an integer of at \
least 2**20 bytes, got 1000
    """

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
    """The config of `job_type="subprocess"`: a Dask LocalCluster of `num_workers` processes on
    this machine, for kernels that hold the GIL or when one process's memory should be capped.

    Attributes
    ----------
    threads_per_worker : int, default 1
        Threads in each worker process.
    memory_limit : str, default "auto"
        Memory each worker process may use before Dask pauses, then restarts it, as Dask
        takes it (`"4GB"`, `"auto"`: the machine's memory shared among the workers). Keep it
        above `memory_budget` times `threads_per_worker`.

    Notes
    -----
    Every `RunnerConfig` attribute applies as well.

    Examples
    --------
    >>> from bioimage_tasks import LocalClusterConfig
    >>> LocalClusterConfig(memory_limit="2GB", memory_budget=2**28).memory_budget
    268435456
    """

    threads_per_worker: int = 1
    memory_limit: str = "auto"


@dataclass(frozen=True)
class SlurmConfig(RunnerConfig):
    """The config of `job_type="slurm"`: Dask workers as SLURM jobs (dask-jobqueue), at most
    `num_workers` of them, one worker process per job.

    Jobs scale adaptively between `min_jobs` and `num_workers`, so killed or expired jobs are
    replaced. The run's jobs are cancelled when it ends, even when its process is killed. The
    run fails when it has had no worker for `worker_timeout` seconds.

    Attributes
    ----------
    partition : str or None, default None
        The SLURM partition (`--partition`). None: the cluster's default.
    walltime : str, default "01:00:00"
        Time limit of each job (`--time`), `"HH:MM:SS"`.
    memory : str, default "4GB"
        Memory of each job (`--mem`); keep it above `memory_budget` times `cores`.
    cores : int, default 1
        Cores (and worker threads) of each job.
    account : str or None, default None
        The account charged (`--account`).
    qos : str or None, default None
        The quality of service (`--qos`).
    extra_directives : tuple of str, default ()
        Further `#SBATCH` options, e.g. `("--constraint=avx2",)`.
    setup : tuple of str, default ()
        Shell lines each job runs before its worker starts, e.g.
        `("module load python/3.11", "source /lab/venv/bin/activate")`.
    python : str or None, default None
        The Python on the nodes, with this package installed. None: this process's.
    log_directory : str or None, default None
        Where the jobs' output files go. None: the current folder.
    interface : str or None, default None
        Network interface the workers and scheduler talk over (e.g. `"ib0"`). None: Dask's
        choice.
    min_jobs : int, default 1
        Jobs kept while the run lasts, even when idle.
    job_name : str, default "bioimage-tasks"
        Prefix of the jobs' names (a random suffix follows, so runs can be told apart in
        `squeue`).

    Notes
    -----
    Every `RunnerConfig` attribute applies as well. Workers need `PREFECT_API_URL` for flows:
    a flow exports it before the jobs start, and `sbatch` passes the environment on.

    Examples
    --------
    >>> from bioimage_tasks import SlurmConfig
    >>> config = SlurmConfig(partition="cpu", memory="16GB", setup=("module load python",))
    >>> config.cluster_kwargs()["job_script_prologue"]
    ['module load python']
    """

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
        """The keyword arguments of dask-jobqueue's `SLURMCluster` for this config."""
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
    """The config of `job_type="dask"`: an existing Dask scheduler (Kubernetes, dask-gateway, a
    shared cluster) that the run submits its batches to.

    Its workers need this package installed, the data's paths or URLs reachable, and, for
    flows, `PREFECT_API_URL` pointing at the flow's API.

    Attributes
    ----------
    address : str
        The scheduler's address, e.g. `"tcp://scheduler:8786"`; required.

    Notes
    -----
    Every `RunnerConfig` attribute applies as well.

    Examples
    --------
    >>> from bioimage_tasks import DaskConfig
    >>> DaskConfig()
    Traceback (most recent call last):
    ...
    bioimage_tasks.errors.ParameterError: DaskConfig.address must name the scheduler, e.g. \
'tcp://host:8786'
    """

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
