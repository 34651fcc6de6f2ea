"""A mode pyramid in its own process, reading slowly, with small regions (as the
`small_regions` fixture), for kill-and-resume tests: python pyramid_job.py INPUT OUTPUT DELAY"""

import sys

from helpers import SlowSource

from bioimage_tasks import pyramid_plan
from flows import pyramid_flow

if __name__ == "__main__":
    pyramid_plan.REGION_VOXELS, pyramid_plan.MIN_REGION_VOXELS, pyramid_plan.TILE_VOXELS = (
        4096,
        1024,
        600,
    )
    source, output, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    pyramid_flow(
        SlowSource(source, delay),
        output,
        scale_factors=[2, 2],
        method="mode",
        chunks=(16, 16, 16),
        num_workers=2,
    )
