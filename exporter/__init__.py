"""ActiveCampaign segment exporter: the host-agnostic core.

Nothing in this package imports the Azure Functions host. Azure SDK adapters (blob store,
Key Vault) live in :mod:`exporter.adapters` and are only imported by the edges that use them.
"""

__version__ = "0.1.0"
