"""The shell around the engine: snapshots in, decisions out, writes in a fenced order."""
