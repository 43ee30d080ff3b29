"""Azure Functions entry point: creates the app and registers the blueprints, nothing else."""

import azure.durable_functions as df
import azure.functions as func

from blueprints import management, orchestration, triggers

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(orchestration.bp)
app.register_functions(triggers.bp)
app.register_functions(management.bp)
