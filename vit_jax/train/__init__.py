"""Training math: state, optimizer, losses, the train and eval steps."""
