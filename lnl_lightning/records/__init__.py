"""A run folder's records: what identifies a run, its config, metrics, checkpoints and members."""
