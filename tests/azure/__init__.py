"""Tests against a real Azurite: the Azure adapters (blob store)."""
