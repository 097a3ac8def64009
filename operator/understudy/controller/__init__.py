"""The controller shell around the engine: snapshots, cycles, writes, leadership, health."""
