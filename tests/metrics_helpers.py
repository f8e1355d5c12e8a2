"""Scraping /metrics over real HTTP and reading it with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One exposition, parsed: every sample by name and labels."""

    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def number(self, name: str, **labels: str) -> float:
        """The sample's value, 0 when the series does not exist (yet)."""
        return self.value(name, **labels) or 0.0

    def label_values(self, family: str, label: str) -> set[str]:
        """Every value `label` takes in the samples of `family` (a name prefix)."""
        return {
            value
            for name, labels in self.samples
            if name.startswith(family)
            for key, value in labels
            if key == label
        }


def parse(text: str) -> Scrape:
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return Scrape(text, samples)


async def scrape(base_url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def scrape_until(
    base_url: str, holds: Callable[[Scrape], bool], seconds: float = 5.0
) -> Scrape:
    """Scrape until `holds` (the sampler and the queue reads run on their own clock)."""
    last = await scrape(base_url)
    for _ in range(int(seconds / 0.05)):
        if holds(last):
            return last
        await asyncio.sleep(0.05)
        last = await scrape(base_url)
    raise AssertionError(f"metrics did not get there in {seconds} s:\n{last.text}")
