"""Leases: which instance acts for a service's shard, when a standby waits beside it (``--lease-ttl-ms``).

The lease of a shard is one key of the key-value bucket ``RRR_LEASES`` (``<service>.<shard>``), whose value
names its holder. The bucket's ``max_age`` is the lease's time to live: JetStream removes a key's last
revision that long after it was written, so a holder that stops renewing (killed, frozen, cut off) loses
the lease by itself, on the server's clock, with nobody deleting anything. Chosen over nats-server's per-key
TTL (``Nats-TTL``, 2.11 and later): one time to live for every lease of a system is all it needs (a system
setting like the others, the last service started sets it), and a bucket's ``max_age`` works on every
JetStream server the deploy files may meet. The bucket is replicated like the streams (R3 on a cluster),
so a lease outlives the loss of a node.

- **Acquire**: ``create`` the key, which succeeds only where there is none (JetStream checks the key's last
  sequence). The instance that made it holds the lease at that revision; the others are standbys and try
  again every ``ttl / 8``, so a lease that lapsed is taken within about an eighth of its time to live.
- **Renew**: every ``ttl / 4``, ``update`` the key at the revision held (compare and set). If another
  instance holds it now, the lease is lost.
- **Valid**: from this process's monotonic clock, the lease is held until the time the last successful
  renewal was *sent* plus the time to live, less a margin of ``ttl / 5``. The server removes the key no
  earlier than that (its clock counts from when it stored the renewal, which is later), so a holder stops
  acting before anyone else can start; a process frozen past that point knows on waking, before it does
  anything, that the lease is gone.
- **Release**: a clean stop deletes the key at the revision held, so the standby takes over at once.

A lease says who should act; what stops a holder that was frozen between checking it and publishing is
the fence each publish carries (``rrr.shared.bus.fencing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from rrr.shared.bus.streams import StreamAdmin, patiently
from rrr.shared.errors import FatalError

__all__ = ["LEASE_BUCKET", "Lease", "LeaseHolder", "LeaseLostError", "lease_key"]

_log = logging.getLogger(__name__)

LEASE_BUCKET = "RRR_LEASES"
# Renewals per time to live, tries per time to live while standing by, and the share of it kept as margin.
_RENEWALS = 4
_TRIES = 8
_MARGIN = 0.2
_LEASE_BYTES = 1024 * 1024


class LeaseHolder(msgspec.Struct, frozen=True, kw_only=True):
    """What a lease's value says: who holds it, since when (ns, its wall clock), and how often it renews."""

    instance: str
    pid: int
    since_ns: int
    ttl_ms: int


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(LeaseHolder).decode


class LeaseLostError(FatalError):
    """This instance no longer holds the lease of its shard: another acts for it, or may."""

    def __init__(self, key: str, why: str) -> None:
        self.key = key
        super().__init__(f"lease {key} lost ({why}): another instance acts for this shard now; stopping")


def lease_key(service: str, shard: int) -> str:
    """The key of a service's shard in ``RRR_LEASES``."""
    return f"{service}.{shard}"


@dataclass(slots=True)
class Lease:
    """The lease of one service's shard, as one instance sees it."""

    bus: StreamAdmin
    key: str
    holder: LeaseHolder
    ttl_s: float
    kv: KeyValue | None = None
    revision: int = 0
    # Monotonic time until which the lease is held, by this process's reckoning (0: not held).
    held_until: float = 0.0
    acquired_at: float = 0.0
    renewals: int = 0
    takeovers: int = 0
    lost: str = ""

    def valid(self) -> bool:
        """Whether this instance may act now: it holds the lease, with the margin to spare."""
        return not self.lost and time.monotonic() < self.held_until

    def check(self) -> None:
        """Raise unless ``valid``: called before anything is published for the shard.

        Raises:
            LeaseLostError: the lease lapsed (a frozen or cut-off process), or another instance took it.
        """
        if not self.valid():
            raise LeaseLostError(self.key, self.lost or "not renewed in time")

    async def _bucket(self) -> KeyValue:
        if self.kv is not None:
            return self.kv
        config = KeyValueConfig(
            bucket=LEASE_BUCKET,
            history=1,
            ttl=self.ttl_s,
            storage=StorageType.FILE,
            max_bytes=_LEASE_BYTES,
            replicas=self.bus.replicas,
        )
        try:
            self.kv = await patiently(lambda: self.bus.js.create_key_value(config), LEASE_BUCKET)
        except nats.js.errors.BadRequestError:
            # Made by another instance already, maybe with another time to live: this one's is the system's now.
            info = await patiently(lambda: self.bus.js.stream_info(f"KV_{LEASE_BUCKET}"), LEASE_BUCKET)
            if info.config.max_age != self.ttl_s or info.config.num_replicas != self.bus.replicas:
                info.config.max_age = self.ttl_s
                # JetStream forgets message ids no later than the messages themselves.
                info.config.duplicate_window = min(self.ttl_s, info.config.duplicate_window or self.ttl_s)
                info.config.num_replicas = self.bus.replicas
                await patiently(lambda: self.bus.js.update_stream(info.config), LEASE_BUCKET)
            self.kv = await patiently(lambda: self.bus.js.key_value(LEASE_BUCKET), LEASE_BUCKET)
        return self.kv

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this instance holds the lease (True), or until ``stop`` is set (False)."""
        kv = await self._bucket()
        value = _encode(self.holder)
        waited = False
        while not stop.is_set():
            sent = time.monotonic()
            try:
                self.revision = await kv.create(self.key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                if not waited:
                    _log.info("standing by: lease %s is held by another instance", self.key)
                    waited = True
            except nats.js.errors.KeyNotFoundError:
                continue  # it lapsed between the create and the client's look at why it failed: at once again
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
                pass  # the cluster is electing a leader: try again
            else:
                self.held_until = sent + self.ttl_s * (1 - _MARGIN)
                self.acquired_at = time.monotonic()
                self.takeovers += int(waited)
                _log.info("holding lease %s (revision %d)%s", self.key, self.revision, " after standing by" * waited)
                return True
            # A retry timer, not synchronisation: the lapse of another's lease is no event anyone sends.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.ttl_s / _TRIES)
        return False

    async def renew_until(self, stop: asyncio.Event) -> None:
        """Renew the lease every ``ttl / 4`` until ``stop`` is set.

        Raises:
            LeaseLostError: another instance holds it now, or it could not be renewed in time.
        """
        kv = await self._bucket()
        value = _encode(self.holder)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.ttl_s / _RENEWALS)
            if stop.is_set():
                return
            sent = time.monotonic()
            if sent >= self.held_until:
                self.lost = "not renewed in time (frozen, or cut off from NATS)"
                raise LeaseLostError(self.key, self.lost)
            try:
                self.revision = await kv.update(self.key, value, last=self.revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError) as exc:
                self.lost = f"taken over ({type(exc).__name__})"
                raise LeaseLostError(self.key, self.lost) from None
            except (nats.errors.Error, TimeoutError) as exc:
                _log.warning("renewing lease %s failed, trying again: %s", self.key, exc)
                continue
            self.held_until = sent + self.ttl_s * (1 - _MARGIN)
            self.renewals += 1

    async def release(self) -> None:
        """Give the lease up (a clean stop): the standby takes over at once instead of after the time to live."""
        if self.kv is None or not self.valid():
            return
        self.held_until = 0.0
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self.kv.delete(self.key, last=self.revision)
            _log.info("released lease %s", self.key)

    def gauges(self) -> dict[str, int]:
        """For the heartbeat: whether this instance acts, its lease's revision, renewals and takeovers."""
        return {
            "lease_active": int(self.valid()),
            "lease_revision": self.revision,
            "lease_renewals": self.renewals,
            "lease_takeovers": self.takeovers,
        }
