"""Datasets (TFDS builders of our own) and the input pipeline."""
