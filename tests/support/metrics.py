"""Reading a service's /metrics as Prometheus does: over HTTP, parsed by prometheus-client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True, slots=True)
class Scrape:
    """One scrape: every sample's value by name and labels, and the text as served."""

    text: str
    samples: dict[str, list[tuple[dict[str, str], float]]]

    def values(self, metric: str, **labels: str) -> list[float]:
        """The values of the samples named ``metric`` whose labels include ``labels``."""
        return [value for have, value in self.samples.get(metric, []) if labels.items() <= have.items()]

    def value(self, metric: str, **labels: str) -> float:
        """The one sample named ``metric`` with ``labels``; fails unless there is exactly one."""
        found = self.values(metric, **labels)
        assert len(found) == 1, f"expected one sample {metric}{labels}, found {found} in:\n{self.text}"
        return found[0]

    def label_values(self, name: str, label: str) -> set[str]:
        """The values ``label`` takes on the samples named ``name``."""
        return {have[label] for have, _ in self.samples.get(name, []) if label in have}


async def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, Mapping[str, str], bytes]:
    """GET ``url`` (plain HTTP on this machine): status, headers, body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), timeout=timeout_s)
    try:
        path = parts.path or "/"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=timeout_s)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


async def scrape(url: str) -> Scrape:
    """Fetch and parse a /metrics page."""
    status, _, body = await http_get(url)
    assert status == 200, f"GET {url} answered {status}: {body[:200]!r}"
    text = body.decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return Scrape(text, samples)
