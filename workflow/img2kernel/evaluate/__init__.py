"""Evaluation of a fitted model on held-out images: metrics, kernel comparison, identification, the verdict."""
