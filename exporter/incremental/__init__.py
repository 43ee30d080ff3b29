"""Incremental sync: the export's compact state and the diff of a snapshot against it."""
