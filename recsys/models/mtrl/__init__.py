"""Multi-task reinforcement-learning recommender with language-model item encoding (docs/MODEL.md)."""

from recsys.models.mtrl.config import PRESETS, MTRLConfig, make_config
from recsys.models.mtrl.recommender import MTRLModel

__all__ = ["MTRLModel", "MTRLConfig", "PRESETS", "make_config"]
