"""Training machinery: device and precision, optimizers and schedules, checkpoints, the loop."""
