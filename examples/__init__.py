"""Example configuration and the demo (make demo)."""
