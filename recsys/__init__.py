"""Nightly batch recommender: Spark features, a multi-task RL model over item text, PostgreSQL serving."""

__version__ = "0.1.0"
