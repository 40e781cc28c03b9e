"""`ddc train`: the configuration and its command, data sampling, the masking schedule, the NELBO,
optimizers and the training loop. Nothing here decides the bytes of a file."""
