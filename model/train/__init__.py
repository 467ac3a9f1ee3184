"""Training a tiny AURA from a synthetic world (issue 14): world, tasks, samples, loss,
trainer, checkpoint builder and behaviour evaluation. Reused by fine-tuning from reviews:
``samples.build_samples``, ``loss.balanced_loss``, ``trainer.train``."""
