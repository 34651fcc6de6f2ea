"""The Prefect edge: tasks, retries, caching, artifacts, events and the flows, around the plain
engine. Imported only by the flows, the command line's `--prefect` runs and deployments."""
