"""Training, evaluation and the glue from a config to a model and data."""
