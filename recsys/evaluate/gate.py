"""The champion/challenger gate: configured rules over tonight's metrics, with reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GATE_METRIC = "ndcg@10"


@dataclass(frozen=True)
class GateRules:
    """The gate's thresholds; their defaults and reasons live in one place, recsys.config.Settings
    (gate_tolerance, gate_margin_vs_popularity, gate_min_coverage, gate_segment_tolerance)."""

    tolerance: float
    margin_vs_popularity: float
    min_coverage: float
    segment_tolerance: float

    @classmethod
    def from_settings(cls, settings) -> "GateRules":
        return cls(
            settings.gate_tolerance, settings.gate_margin_vs_popularity, settings.gate_min_coverage,
            settings.gate_segment_tolerance,
        )


SEGMENT_METRICS = ("short_history_ndcg@10", "new_items_hr@10")


@dataclass(frozen=True)
class GateDecision:
    decision: str  # pass | fail | forced
    reasons: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.decision in ("pass", "forced")


def decide(metrics: dict[str, dict[str, float]], rules: GateRules, force: bool = False) -> GateDecision:
    """`metrics` maps model role (challenger, champion, popularity, ...) to its metric dict."""
    ch = metrics["challenger"]
    failures, passes = [], []
    value = ch.get(GATE_METRIC, float("nan"))
    if any(isinstance(v, float) and math.isnan(v) for v in ch.values()) or ch.get("nan_scores", 0):
        failures.append("challenger produced NaN metrics or scores")
    pop = metrics.get("popularity", {}).get(GATE_METRIC)
    if pop is not None:
        need = pop * (1 + rules.margin_vs_popularity)
        (passes if value >= need else failures).append(
            f"{GATE_METRIC} {value:.4f} {'>=' if value >= need else '<'} popularity {pop:.4f} x (1 + {rules.margin_vs_popularity})"
        )
    champ = metrics.get("champion", {}).get(GATE_METRIC)
    if champ is not None:
        need = champ * (1 - rules.tolerance)
        (passes if value >= need else failures).append(
            f"{GATE_METRIC} {value:.4f} {'>=' if value >= need else '<'} champion {champ:.4f} x (1 - {rules.tolerance})"
        )
    else:
        passes.append("no champion yet")
    champion = metrics.get("champion", {})
    for seg in SEGMENT_METRICS:
        if seg in ch and seg in champion:
            need = champion[seg] * (1 - rules.segment_tolerance)
            ok = ch[seg] >= need
            (passes if ok else failures).append(
                f"{seg} {ch[seg]:.4f} {'>=' if ok else '<'} champion {champion[seg]:.4f} x (1 - {rules.segment_tolerance})"
            )
    cov = ch.get("coverage@10")
    if cov is not None:
        ok = cov >= rules.min_coverage
        (passes if ok else failures).append(f"coverage@10 {cov:.4f} {'>=' if ok else '<'} {rules.min_coverage}")
    if failures and force:
        return GateDecision("forced", ["forced promotion despite: " + "; ".join(failures)] + passes)
    return GateDecision("fail" if failures else "pass", failures + passes)
