"""Datasets: sources that fetch raw arrays (`sources`), and the split into tensors (`prepare`)."""
