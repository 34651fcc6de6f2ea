"""Self-healing deployments: when a run of a deployment ends with `bioimage-tasks.blocks.failed`,
run the same deployment again with the same parameters plus `block_ids=<the failed ids>`, at most
`max_heals` times in a row for one output.

It is a Prefect deployment trigger (an automation owned by the deployment, created when the
deployment is served or deployed, removed with it):

- it expects our blocks-failed event, whose resource is the output array
  (`bioimage-tasks.array.<path>`), related to the run's flow and deployment, which the trigger
  matches by name, so other deployments' failures never start this one;
- the event's `bioimage-tasks.failures-in-a-row` label counts the failed runs in a row on that
  output (1 for the first failure); the trigger accepts 1..max_heals, so after max_heals failed
  heals it stops and a person takes over (the next completed run resets the count);
- the action's parameters are one Jinja template over the failed flow run's own parameters (not
  the deployment's defaults, so `--param` overrides survive), with `block_ids` from the event and
  `resume_from` cleared (it cannot be combined with block_ids).

`deployments/prefect.yaml` declares the same trigger for `prefect deploy` (a test keeps the two
equal)."""

from __future__ import annotations

from prefect.events import DeploymentEventTrigger

MAX_HEALS = 2
HEAL_PARAMETERS = {
    "__prefect_kind": "json",
    "value": {
        "__prefect_kind": "jinja",
        "template": "{{ dict(flow_run.parameters, block_ids=event.payload.block_ids, "
        "resume_from=None) | tojson }}",
    },
}


def heal_trigger(
    flow_name: str, deployment_name: str, max_heals: int = MAX_HEALS
) -> DeploymentEventTrigger:
    """The trigger that re-runs deployment `flow_name/deployment_name` on its own failed blocks."""
    if max_heals < 1:
        raise ValueError(f"max_heals must be >= 1, got {max_heals}")
    return DeploymentEventTrigger(
        name=f"heal {flow_name}/{deployment_name}",
        description=f"Re-run the failed blocks of {flow_name}/{deployment_name} "
        f"(at most {max_heals} times in a row)",
        expect={"bioimage-tasks.blocks.failed"},
        match={
            "prefect.resource.id": "bioimage-tasks.array.*",
            "bioimage-tasks.failures-in-a-row": [str(n) for n in range(1, max_heals + 1)],
        },
        match_related=[
            {"prefect.resource.role": "flow", "prefect.resource.name": flow_name},
            {"prefect.resource.role": "deployment", "prefect.resource.name": deployment_name},
        ],
        parameters=HEAL_PARAMETERS,
    )
