"""The versions a stream holds against cleanup, one pin per source, kept from epoch to epoch.

Each epoch reads its sources at pinned versions (`Source.pinned`, a tag in the store). A pin is
two writes (the tag, its removal), which cost a short epoch of a small replay table more than its
scan. So a pin outlives its epoch while its version is still the latest: the next epoch that
resolves the same version takes it over instead of writing a new one. Holding the latest costs no
storage (cleanup never removes the latest version), and a pin whose version was superseded is
released when its epoch ends. Pins still held are released by `release()` (`stream.close()`), when
the stream is garbage-collected, and at interpreter exit; one held longer than `RENEW_AFTER` is
taken again, so that cleanup never mistakes it for a pin left by a killed reader (`STALE_PINS`).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from replaystore.store import STALE_PINS
from replaystore.stream.sources import Source

RENEW_AFTER = STALE_PINS.total_seconds() / 4  # seconds a pin is kept before it is taken again


@dataclass(frozen=True)
class _Held:
    version: int | None
    taken: float  # time.monotonic() when the pin was taken
    release: weakref.finalize  # releases the pin once, whichever comes first: release(), GC or exit


class Pins:
    """What one stream holds: source index → its pinned version."""

    def __init__(self) -> None:
        self._held: dict[int, _Held] = {}

    def hold(self, sources: Sequence[Source], versions: Sequence[int | None]) -> None:
        """Pin `versions` (one per source that can hold one), keeping the pins already held on those
        versions. A new pin is taken before the old one is released, so a renewed version is never
        unheld."""
        for i, (source, version) in enumerate(zip(sources, versions)):
            if not source.holds_versions or version is None:
                continue
            held = self._held.get(i)
            if held is not None and held.version == version and time.monotonic() - held.taken < RENEW_AFTER:
                continue
            stack = contextlib.ExitStack()
            stack.enter_context(source.pinned(version))
            self._held[i] = _Held(version, time.monotonic(), weakref.finalize(self, stack.close))
            if held is not None:
                held.release()

    def keep_latest(self, sources: Sequence[Source]) -> None:
        """At an epoch's end: release the pins whose version is no longer what the source resolves to."""
        for i, held in list(self._held.items()):
            if not sources[i].resolves_to(held.version):
                held.release()
                del self._held[i]

    def release(self) -> None:
        for held in self._held.values():
            held.release()
        self._held.clear()
