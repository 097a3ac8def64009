"""The controller: kopf's watches feed snapshots to a decision cycle that makes no writes, and a writer
carries out its effects in a fixed order (see README, "Architecture")."""
