"""Training loop, teacher features, checkpoints, metrics and the run orchestration."""
