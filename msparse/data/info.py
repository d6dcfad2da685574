"""Provenance of loaded data: :class:`DataInfo` says where the pixels of an array came from (source, kind, official
indices, exact or lossy); every loader of :mod:`msparse.data` returns one and results must carry it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

__all__ = ["DataInfo", "index_ranges"]


@dataclass(frozen=True)
class DataInfo:
    """Provenance of a loaded array.

    source: human-readable origin, e.g. "official files at /data/cifar-10-batches-py".
    kind: "official" | "offline" | "jpeg" | "imagenet-folder".
    exact: True when pixels are the official byte values (False for the JPEG copy).
    indices: official indices of the rows, as a compact string like "0..999" (or a list).
    """

    dataset: str
    split: str
    kind: str
    source: str
    n: int
    indices: str
    exact: bool
    path: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:  # used in logs and model cards
        return f"{self.dataset}/{self.split}: {self.source}, n={self.n}, indices {self.indices}"


def index_ranges(idx: Sequence[int]) -> str:
    """Compact string for a sorted index list: [0,1,2,5] -> "0..2,5"."""
    idx = [int(i) for i in idx]
    if not idx:
        return ""
    parts, start, prev = [], idx[0], idx[0]
    for i in idx[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}..{prev}" if prev > start else f"{start}")
        if i is not None:
            start = prev = i
    return ",".join(parts)
