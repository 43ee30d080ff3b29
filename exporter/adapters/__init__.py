"""Azure SDK adapters at the edge of the core: blob store and Key Vault."""
