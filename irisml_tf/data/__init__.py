"""Data layer: observation model and simulated datasets."""
