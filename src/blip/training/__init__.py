"""Training: the pretraining objective and (next) the one trainer every task uses."""
