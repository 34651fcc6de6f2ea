"""Prefect's server on a real PostgreSQL (scripts/postgres-test-server.sh): a served deployment
runs on demand and a pyramid is written, with their runs, states and artifacts in PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import prefect_server_process, served_deployments, zarr_input
from reference import skimage_downsample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_prefect(postgres_database, tmp_path_factory):
    """`prefect server start` with its database in PostgreSQL; yields the API URL."""
    with prefect_server_process(
        tmp_path_factory.mktemp("prefect-postgres"), database_url=postgres_database
    ) as url:
        yield url


def postgres_rows(database_url: str, sql: str, *args) -> list:
    """Rows of `sql` run directly in the PostgreSQL database (asyncpg, as Prefect's server uses)."""
    import asyncio

    import asyncpg

    async def query():
        connection = await asyncpg.connect(
            database_url.replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            return await connection.fetch(sql, *args)
        finally:
            await connection.close()

    return asyncio.run(query())


def test_deployment_runs_against_a_postgres_backed_server(
    postgres_prefect, postgres_database, tmp_path
):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    image = np.random.default_rng(9).integers(0, 255, (40, 36, 32), dtype=np.uint8)
    zarr_input(tmp_path, image, (16, 16, 16), container="sample.zarr")
    with served_deployments(postgres_prefect, tmp_path):
        with temporary_settings(updates={PREFECT_API_URL: postgres_prefect}):
            run = run_deployment("downsample/nightly-downsample", timeout=240)
            assert run.state.is_completed(), run.state
            expected = np.clip(np.rint(skimage_downsample(image, (2, 2, 2), 1, True)), 0, 255)
            np.testing.assert_array_equal(
                zarr.open_array(str(tmp_path / "sample.zarr"), path="s1")[:], expected
            )
            rows = postgres_rows(
                postgres_database, "SELECT state_type FROM flow_run WHERE id = $1", run.id
            )
            assert [r["state_type"] for r in rows] == [
                "COMPLETED"
            ]  # the run's state lives in PostgreSQL
            with get_client(sync_client=True) as client:
                automations = client.read_automations_by_name("heal downsample/nightly-downsample")
            assert len(automations) == 1  # the healing trigger, stored in PostgreSQL too


def test_pyramid_against_a_postgres_backed_server(postgres_prefect, postgres_database, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import pyramid_flow

    image = np.random.default_rng(4).integers(0, 255, (32, 32, 32), dtype=np.uint8)
    zarr_input(tmp_path, image, (16, 16, 16))
    with temporary_settings(updates={PREFECT_API_URL: postgres_prefect}):
        state = pyramid_flow(
            f"{tmp_path}/in.zarr/raw",
            f"{tmp_path}/out.zarr",
            scale_factors=[2, 2],
            method="mean",
            chunks=(8, 8, 8),
            return_state=True,
        )
    assert state.is_completed(), state
    rows = postgres_rows(
        postgres_database,
        "SELECT state_type FROM flow_run WHERE id = $1",
        state.state_details.flow_run_id,
    )
    assert [r["state_type"] for r in rows] == ["COMPLETED"]
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_array_equal(group["s0"][:], image)
    s1 = np.rint(
        image.reshape(16, 2, 16, 2, 16, 2).mean(axis=(1, 3, 5))
    )  # exact mean, ties to even
    np.testing.assert_array_equal(group["s1"][:], s1)
    s2 = np.rint(
        image.reshape(8, 4, 8, 4, 8, 4).mean(axis=(1, 3, 5))
    )  # from s0, not from rounded s1
    np.testing.assert_array_equal(group["s2"][:], s2)
