"""Azure Functions entry point: registers the blueprints and nothing else."""

import azure.durable_functions as df

app = df.DFApp()
