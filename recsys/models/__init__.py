"""Recommenders: baselines (popularity, item co-occurrence) and the multi-task RL model."""

from recsys.models.base import Recommender, build_model, load_model

__all__ = ["Recommender", "build_model", "load_model"]
