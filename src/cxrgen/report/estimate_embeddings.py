"""The trust flag's embedding signal: home validation and target images looked up in a study's embeddings.

Linear-probe studies hold per-image features (``embeddings/<key>/``, :mod:`cxrgen.learn.embed`). The distance
between a run's home validation images and a target's images is the same for every model of a configuration
(they share the split), so it is computed once per configuration and target, with the first backbone (by name)
that embedded every one of those images, and shown beside every model's estimates. Elsewhere it is NaN with the
reason ``no embeddings``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgen.shift.embedding_distance import domain_auc

NO_EMBEDDINGS = "no embeddings"


@dataclass
class EmbeddingLookup:
    """Every finished embedding folder under ``root`` (a study's ``embeddings/``), by backbone: image id ->
    (features, row); read on first use."""

    root: Path
    seed: int = 0
    _by_arch: dict[str, dict[str, tuple[np.ndarray, int]]] | None = None
    _cache: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    def _load(self) -> dict[str, dict[str, tuple[np.ndarray, int]]]:
        if self._by_arch is None:
            self._by_arch = {}
            root = self.root
            folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            for folder in folders:
                meta_file = folder / "meta.json"
                if not meta_file.is_file() or not json.loads(meta_file.read_text(encoding="utf-8")).get("complete"):
                    continue  # a .partial build, or not an embedding folder
                from cxrgen.learn.embed import INDEX, open_embeddings  # torch: only where embeddings exist

                features, meta = open_embeddings(folder)
                index = pd.read_parquet(folder / INDEX)
                index = index.loc[index["ok"]]
                found = self._by_arch.setdefault(str(meta["arch"]), {})
                found |= {str(i): (features, int(r)) for i, r in zip(index["image_id"], index["row"], strict=True)}
        return self._by_arch

    def _features(self, arch: str, ids: pd.Series) -> np.ndarray | None:
        table = self._load()[arch]
        if not ids.astype(str).isin(table.keys()).all():
            return None
        return np.vstack([np.asarray(table[str(i)][0][table[str(i)][1]], dtype=np.float64) for i in ids])

    def distance(self, key: tuple[str, str], home: pd.DataFrame, target: pd.DataFrame) -> tuple[float, str]:
        """Domain AUC of ``target`` vs ``home`` (frames with ``image_id``, ``patient_id``), cached under ``key``.

        Returns ``(NaN, "no embeddings")`` when no backbone embedded all of the images.
        """
        if key not in self._cache:
            self._cache[key] = (math.nan, NO_EMBEDDINGS)
            for arch in sorted(self._load()):
                h, t = self._features(arch, home["image_id"]), self._features(arch, target["image_id"])
                if h is not None and t is not None:
                    self._cache[key] = domain_auc(h, t, home["patient_id"].to_numpy(), target["patient_id"].to_numpy(),
                                                  seed=self.seed)  # fmt: skip
                    break
        return self._cache[key]


__all__ = ["NO_EMBEDDINGS", "EmbeddingLookup"]
