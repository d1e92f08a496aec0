"""kopf's start-up wait for its indexes, made linear in the objects watched (docs/scaling.md, "The start-up wait").

kopf runs no handler before every index is filled. It waits with one ``ToggleSet(all)`` of readiness toggles
(``kopf._cogs.aiokits.aiotoggles``; made in ``kopf._core.reactor.orchestration.orchestrator``): one toggle per
indexed resource kind, dropped when its initial listing ends (``queueing.watcher``), and one per *object* of the
initial listings, made when its worker starts and dropped once the object is indexed, after which the worker waits
for the whole set (``processing.process_resource_event``: ``drop_toggle``, then ``wait_for(True)``). Every make
and drop calls ``notify_all`` on the set's one ``asyncio.Condition``; that wakes every worker already waiting, and
each re-evaluates ``all(toggle.is_on() for toggle in toggles)``. With N objects listed that is O(N²) wake-ups
before the first handler runs: 10 s for 300 pools + 300 Deployments, 86 s for 1 000 + 1 000, not done after
8 minutes for 5 000 + 5 000 on the bench machine (bench/RESULTS.md, section 6). kopf's main branch (checked
2026-06) has the same ToggleSet; its docs (indexing.rst, "Precautions for huge clusters") name the related
worker-limit deadlock and thread explosion, not this cost.

:class:`CountingToggleSet` keeps the same semantics with a count of the member toggles that are on: ``is_on`` is
O(1) for ``all``/``any``, and making or dropping a toggle wakes the waiters only when the aggregate changes — for
the start-up wait, once, when the last toggle is dropped. Turning a member toggle still wakes everyone, as kopf
does, because a task may wait on that toggle alone. Any other aggregate function keeps kopf's behaviour.

:func:`install` replaces ``aiotoggles.ToggleSet`` (kopf looks it up on the module at call time) from chanscale's
startup handler, which kopf runs before it starts the orchestrator that makes the set. It is pinned: it refuses
to patch a kopf whose ``aiotoggles`` source differs from the one verified here, and says what to do.
``CHANSCALE_KOPF_TOGGLESET=kopf`` keeps kopf's own ToggleSet (for comparisons, or with an unverified kopf).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
from collections.abc import Callable, Iterable
from types import ModuleType

from kopf._cogs.aiokits import aiotoggles

VERIFIED_KOPF = "1.45.2"  # and kopf's main branch of 2026-06: the same aiotoggles.py
VERIFIED_SOURCE_SHA256 = "8308730e8c42c15fc975c4900bad8ab12589f654f699feff5a25f3032416e444"
ENV = "CHANSCALE_KOPF_TOGGLESET"

KopfToggleSet = aiotoggles.ToggleSet  # kopf's own class, kept whatever install() does to the module


class KopfInternalsChanged(RuntimeError):
    """The installed kopf is not the one this patch was verified against."""


class CountedToggle(aiotoggles.Toggle):
    """A member toggle that keeps its set's count of toggles that are on."""

    def __init__(
        self, state: bool, *, name: str | None, condition: asyncio.Condition, owner: CountingToggleSet
    ) -> None:
        super().__init__(state, name=name, condition=condition)
        self._owner = owner

    async def turn_to(self, __state: bool) -> None:
        async with self._condition:
            state = bool(__state)
            if state != self._state and self in self._owner:
                self._owner._on += 1 if state else -1
            self._state = state
            self._condition.notify_all()  # as kopf: a task may wait on this toggle alone


class CountingToggleSet(KopfToggleSet):
    """kopf's ToggleSet with O(1) ``is_on`` for ``all``/``any``, waking waiters only when the aggregate changes."""

    def __init__(self, fn: Callable[[Iterable[bool]], bool]) -> None:
        super().__init__(fn)
        self._on = 0  # member toggles that are on
        self._counted = fn is all or fn is any

    def is_on(self) -> bool:
        if self._fn is all:
            return self._on == len(self._toggles)
        if self._fn is any:
            return self._on > 0
        return super().is_on()

    def _notify_if_changed(self, before: bool) -> None:
        if not self._counted or self.is_on() != before:
            self._condition.notify_all()

    def _discard(self, toggle: aiotoggles.Toggle) -> None:
        if toggle in self._toggles:
            self._toggles.discard(toggle)
            self._on -= toggle.is_on()

    async def make_toggle(self, __val: bool = False, *, name: str | None = None) -> aiotoggles.Toggle:
        toggle = CountedToggle(bool(__val), name=name, condition=self._condition, owner=self)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            self._on += toggle.is_on()
            self._notify_if_changed(before)
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        async with self._condition:
            before = self.is_on()
            self._discard(toggle)
            self._notify_if_changed(before)

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            before = self.is_on()
            for toggle in list(toggles):
                self._discard(toggle)
            self._notify_if_changed(before)


def check(module: ModuleType = aiotoggles) -> None:
    """Raise :class:`KopfInternalsChanged` unless ``module`` is the aiotoggles verified here and kopf makes its
    ToggleSets through the module attribute (so that replacing it reaches them)."""
    from kopf._core.reactor import orchestration, running

    try:
        digest = hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    except OSError:  # no source installed (bytecode only): cannot be verified
        digest = "unavailable"
    makers_ok = all(m.aiotoggles is aiotoggles and not hasattr(m, "ToggleSet") for m in (orchestration, running))
    if digest != VERIFIED_SOURCE_SHA256 or not makers_ok:
        import kopf

        raise KopfInternalsChanged(
            f"chanscale's fix of kopf's start-up wait (chanscale.kopf_toggles) was verified with kopf "
            f"{VERIFIED_KOPF}, but kopf {getattr(kopf, '__version__', '?')} has a different "
            f"{'aiotoggles.py' if digest != VERIFIED_SOURCE_SHA256 else 'way of making its ToggleSets'}. "
            f"Install kopf {VERIFIED_KOPF}, or re-verify the patch against this kopf and update "
            f"VERIFIED_SOURCE_SHA256, or set {ENV}=kopf to run with kopf's own ToggleSet (correct, but start-up "
            f"is quadratic in the objects watched)."
        )


def install() -> bool:
    """Make kopf build :class:`CountingToggleSet` from now on; idempotent. False if ``CHANSCALE_KOPF_TOGGLESET=kopf``
    keeps kopf's own. Raises :class:`KopfInternalsChanged` rather than patch a kopf it was not verified with."""
    if os.environ.get(ENV, "") == "kopf":
        aiotoggles.ToggleSet = KopfToggleSet  # type: ignore[misc]
        return False
    if aiotoggles.ToggleSet is not CountingToggleSet:
        check()
        aiotoggles.ToggleSet = CountingToggleSet  # type: ignore[misc]
    return True
