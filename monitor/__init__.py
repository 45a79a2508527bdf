"""Synthetic monitor for MLflow and the Asgard MLOps API."""

__version__ = "0.1.0"
