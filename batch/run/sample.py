"""`run --sample N`: a stable sample of a manifest's inputs, to try models before a big run.

Inputs (an item's `base_id`: with a `models:` matrix, one input runs once per model) are
ranked by a hash of their base id, and the first N are taken. So the sample of a manifest is
the same on every run and on every machine, a larger N contains a smaller one, and adding
or removing other items moves no sampled input out unless it is outranked. Each sampled
input keeps all of its items, one per model, so a comparison sees every model on the same
inputs. The sampled items are ordinary items (same ids, same ledger records): a later full
run of the manifest skips the ones that succeeded, and pays for nothing twice.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence

from batch.manifest.load import Item


def sample_items(items: Sequence[Item], inputs: int) -> list[Item]:
    """The items of the first `inputs` base ids by rank, in their manifest order."""
    bases = {item.base_id for item in items}
    if inputs >= len(bases):
        return list(items)
    chosen = set(heapq.nsmallest(inputs, bases, key=_rank))
    return [item for item in items if item.base_id in chosen]


def _rank(base_id: str) -> tuple[bytes, str]:
    # The id itself breaks (never seen) hash ties, so the order is total.
    return hashlib.sha256(base_id.encode("utf-8", "surrogatepass")).digest(), base_id
