"""initlab: a reproducible study of weight initialization and activation functions."""
