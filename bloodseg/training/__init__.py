"""A training run and what keeps it safe: the Lightning module, losses, test-time augmentation, the
builders of trainer / callbacks / loggers, checkpoints (atomic writes, digests, loading), divergence
guard, run lock, job status, and scoring a checkpoint through the test loop.

May import: everything above it (errors ... evaluation, sweeps); never inference or html_report.
"""
