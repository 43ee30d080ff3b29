"""Azure Functions blueprints: thin adapters over the exporter core."""
