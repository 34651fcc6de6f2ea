"""A downsample run in its own process, for kill-and-resume tests:
python resume_job.py INPUT OUTPUT JOB_TYPE DELAY [SLURM_LOG_DIR]
(RESUME_ENGINE=plain in the environment: the plain API instead of the flow)"""

import os
import sys

from helpers import SlowSource

from bioimage_tasks import downsample
from bioimage_tasks.runners import LocalClusterConfig, RunnerConfig, SlurmConfig
from flows import downsample_flow

CONFIGS = {
    "local": lambda logs: RunnerConfig(),
    "subprocess": lambda logs: LocalClusterConfig(worker_timeout=120),
    "slurm": lambda logs: SlurmConfig(
        interface="lo", walltime="00:15:00", memory="1GB", log_directory=logs, worker_timeout=120
    ),
}

if __name__ == "__main__":
    source, output, job_type, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    config = CONFIGS[job_type](sys.argv[5] if len(sys.argv) > 5 else None)
    run = downsample if os.environ.get("RESUME_ENGINE") == "plain" else downsample_flow
    run(
        SlowSource(source, delay),
        2,
        output,
        order=1,
        anti_aliasing=True,
        block_shape=(8, 8, 8),
        job_type=job_type,
        num_workers=2,
        job_config=config,
    )
