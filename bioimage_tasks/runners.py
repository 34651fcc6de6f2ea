"""Backends: which Prefect task runner executes the batches for a `job_type`."""

from __future__ import annotations

from dataclasses import dataclass

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

JOB_TYPES = ("local", "subprocess", "slurm", "dask")
AVAILABLE_JOB_TYPES = ("local",)


@dataclass(frozen=True)
class RunnerConfig:
    """Settings every backend shares. `blocks_per_task` fixes the batch size (default: chosen from
    the block count and workers, see `blockwise.plan_batches`)."""

    blocks_per_task: int | None = None

    def __post_init__(self) -> None:
        if self.blocks_per_task is not None and self.blocks_per_task < 1:
            raise ValueError(f"job_config.blocks_per_task must be >= 1, got {self.blocks_per_task}")


def check_backend(job_type: str, num_workers: int, job_config: RunnerConfig | None) -> RunnerConfig:
    """Validate the backend parameters before any work starts; return the effective config."""
    if job_type not in JOB_TYPES:
        raise ValueError(f"job_type must be one of {JOB_TYPES}, got {job_type!r}")
    if job_type not in AVAILABLE_JOB_TYPES:
        raise NotImplementedError(
            f"job_type={job_type!r} is not available yet (only {AVAILABLE_JOB_TYPES}); use job_type='local'"
        )
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    if job_config is None:
        return RunnerConfig()
    if not isinstance(job_config, RunnerConfig):
        raise ValueError(f"job_config must be a RunnerConfig for job_type={job_type!r}, got {job_config!r}")
    return job_config


def make_task_runner(job_type: str, num_workers: int) -> TaskRunner:
    """A task runner for `job_type` (checked by `check_backend`): threads in this process for "local"."""
    if job_type == "local":
        return ThreadPoolTaskRunner(max_workers=num_workers)
    raise NotImplementedError(f"job_type={job_type!r} is not available yet")
