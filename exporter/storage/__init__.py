"""Storage: the ``Store`` contract, the local store, and the layout of runs inside it."""
