"""Cost before spending: `run --dry-run` and the --max-cost budget both ask the API.

The API's dry run (`?dryRun=true`, HTTP 269) prices one generate body and creates nothing.
Items that differ only in prompt and reference images cost the same, so one estimate
per distinct parameter set serves them all: a 20,000-image dataset edit costs one or two
estimate calls, not 20,000. An estimate needs real asset ids, so the references of one
item per parameter set are uploaded (uploads are free; nothing is generated).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from batch.api.client import ScenarioClient
from batch.manifest.load import Item
from batch.run.references import References


def cost_signature(item: Item) -> str:
    """What the price can depend on: the model, every parameter, and how many references."""
    return json.dumps(
        {"model": item.model, "params": dict(item.params), "references": len(item.references)},
        sort_keys=True,
        default=list,
    )


class CostBook:
    """Compute units per item, asked of the API once per parameter set."""

    def __init__(self, client: ScenarioClient, references: References) -> None:
        self._client = client
        self._references = references
        self._prices: dict[str, float] = {}

    async def price(self, item: Item) -> float:
        signature = cost_signature(item)
        if signature not in self._prices:
            body = item.generate_body(await self._references.asset_ids(item))
            self._prices[signature] = await self._client.estimate(item.model, body)
        return self._prices[signature]


@dataclass(slots=True)
class Estimate:
    items: int = 0
    total: float = 0.0
    calls: int = 0
    per_signature: dict[str, tuple[int, float]] = field(default_factory=dict)
    per_model: dict[str, tuple[int, float]] = field(default_factory=dict)  # items, total CU


async def estimate_items(book: CostBook, items: Iterable[Item]) -> Estimate:
    groups: Counter[str] = Counter()
    example: dict[str, Item] = {}
    for item in items:
        signature = cost_signature(item)
        groups[signature] += 1
        example.setdefault(signature, item)
    estimate = Estimate()
    for signature, count in groups.items():
        price = await book.price(example[signature])
        estimate.calls += 1
        estimate.items += count
        estimate.total += price * count
        estimate.per_signature[signature] = (count, price)
        model = example[signature].model
        known, total = estimate.per_model.get(model, (0, 0.0))
        estimate.per_model[model] = (known + count, total + price * count)
    return estimate


__all__ = ["CostBook", "Estimate", "cost_signature", "estimate_items"]
