"""Azure Functions entry point: creates the app and registers the blueprints, nothing else."""

from blueprints import console, management, orchestration, triggers
from blueprints.register import new_app

app = new_app()
app.register_functions(orchestration.bp)
app.register_functions(triggers.bp)
app.register_functions(management.bp)
app.register_functions(console.bp)
