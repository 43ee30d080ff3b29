"""Azure Functions entry point: registers the blueprints and nothing else."""

import azure.durable_functions as df  # type: ignore[import-untyped]

app = df.DFApp()
