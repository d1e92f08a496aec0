"""chanscale.kopf_toggles: kopf's ToggleSet semantics, with a start-up wait linear in the objects listed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Iterator

import pytest
from bench.kopf_startup import simulate_start_up
from kopf._cogs.aiokits import aiotoggles

from chanscale import kopf_toggles
from chanscale.kopf_toggles import CountingToggleSet, KopfInternalsChanged, KopfToggleSet

pytestmark = pytest.mark.unit

BOTH = pytest.mark.parametrize("cls", [KopfToggleSet, CountingToggleSet], ids=["kopf", "counting"])
Fn = Callable[[Iterable[bool]], bool]


@pytest.fixture(autouse=True)
def _restore_kopf() -> Iterator[None]:
    yield
    aiotoggles.ToggleSet = KopfToggleSet  # type: ignore[misc]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@BOTH
@pytest.mark.parametrize("fn, empty", [(all, True), (any, False)])
async def test_empty_set(cls: type[KopfToggleSet], fn: Fn, empty: bool) -> None:
    ts = cls(fn)
    assert len(ts) == 0 and list(ts) == []
    assert ts.is_on() is empty and ts.is_off() is not empty


@BOTH
@pytest.mark.parametrize("fn", [all, any])
@pytest.mark.parametrize("initial", [False, True])
async def test_make_then_drop(cls: type[KopfToggleSet], fn: Fn, initial: bool) -> None:
    ts = cls(fn)
    toggle = await ts.make_toggle(initial, name="t")
    assert toggle in ts and len(ts) == 1 and set(ts) == {toggle}
    assert ts.is_on() is initial
    await ts.drop_toggle(toggle)
    assert toggle not in ts and len(ts) == 0
    assert ts.is_on() is (fn is all)
    await ts.drop_toggle(toggle)  # dropping a toggle not in the set changes nothing
    await ts.drop_toggle(aiotoggles.Toggle(True))
    assert ts.is_on() is (fn is all) and len(ts) == 0


@BOTH
async def test_all_and_any_follow_the_members(cls: type[KopfToggleSet]) -> None:
    every, some = cls(all), cls(any)
    a, b = await every.make_toggle(True), await every.make_toggle(False)
    c, d = await some.make_toggle(False), await some.make_toggle(False)
    assert (every.is_on(), some.is_on()) == (False, False)
    await b.turn_to(True)
    await c.turn_to(True)
    assert (every.is_on(), some.is_on()) == (True, True)
    await a.turn_to(False)
    await d.turn_to(True)
    await c.turn_to(False)
    assert (every.is_on(), some.is_on()) == (False, True)
    await every.drop_toggles([a, aiotoggles.Toggle(False)])
    await some.drop_toggles(iter([d]))
    assert (every.is_on(), some.is_on()) == (True, False)
    assert set(every) == {b} and set(some) == {c}


@BOTH
async def test_a_toggle_turned_after_its_drop_does_not_count(cls: type[KopfToggleSet]) -> None:
    ts = cls(all)
    gone = await ts.make_toggle(True)
    await ts.drop_toggle(gone)
    await gone.turn_to(False)
    await gone.turn_to(True)
    await gone.turn_to(False)
    assert ts.is_on() is True
    other = await ts.make_toggle(True)
    assert ts.is_on() is True
    await other.turn_to(False)
    assert ts.is_on() is False


@BOTH
@pytest.mark.parametrize("fn", [all, any])
async def test_wait_for_true_and_false(cls: type[KopfToggleSet], fn: Fn) -> None:
    ts = cls(fn)
    toggle = await ts.make_toggle(False)
    on, off = asyncio.create_task(ts.wait_for(True)), asyncio.create_task(ts.wait_for(False))
    await _settle()
    assert not on.done() and off.done()  # off already: returns at once
    await toggle.turn_to(True)
    await asyncio.wait_for(on, 5)
    off = asyncio.create_task(ts.wait_for(False))
    await _settle()
    assert not off.done()
    if fn is all:
        await ts.make_toggle(False)  # all(): a new toggle that is off turns the set off
    else:
        await ts.drop_toggle(toggle)  # any(): the last toggle that is on leaving turns it off
    await asyncio.wait_for(off, 5)


@BOTH
async def test_the_start_up_wait_ends_when_the_last_toggle_is_dropped(cls: type[KopfToggleSet]) -> None:
    ts = cls(all)
    kind = await ts.make_toggle(name="the resource kind's listing")
    objects = [await ts.make_toggle(name=f"object {i}") for i in range(3)]
    waiters = []
    for toggle in objects:
        await ts.drop_toggle(toggle)
        waiters.append(asyncio.create_task(ts.wait_for(True)))
    await _settle()
    assert not any(w.done() for w in waiters)
    await ts.drop_toggle(kind)
    await asyncio.wait_for(asyncio.gather(*waiters), 5)


@BOTH
async def test_a_waiter_on_one_member_toggle_wakes(cls: type[KopfToggleSet]) -> None:
    ts = cls(any)
    one, other = await ts.make_toggle(True), await ts.make_toggle(False)
    waiter = asyncio.create_task(other.wait_for(True))
    await _settle()
    assert not waiter.done()
    await other.turn_to(True)  # the aggregate stays on; the member's waiter must still wake
    await asyncio.wait_for(waiter, 5)
    assert one.is_on() and ts.is_on()


async def test_any_other_aggregate_keeps_kopfs_behaviour() -> None:
    def majority(states: Iterable[bool]) -> bool:
        s = list(states)
        return sum(s) * 2 > len(s)

    ts = CountingToggleSet(majority)
    a, b, _c = await ts.make_toggle(True), await ts.make_toggle(False), await ts.make_toggle(False)
    waiter = asyncio.create_task(ts.wait_for(True))
    await _settle()
    assert not ts.is_on() and not waiter.done()
    await b.turn_to(True)
    await asyncio.wait_for(waiter, 5)
    await ts.drop_toggle(a)
    assert not ts.is_on()


@pytest.mark.parametrize("seed", range(5))
async def test_random_operations_agree_with_kopf(seed: int) -> None:
    rnd = random.Random(seed)
    for fn in (all, any):
        theirs, ours = KopfToggleSet(fn), CountingToggleSet(fn)
        pairs: list[tuple[aiotoggles.Toggle, aiotoggles.Toggle]] = []
        for _ in range(300):
            op = rnd.choice(["make", "make", "drop", "drops", "turn", "turn"])
            if op == "make":
                state = rnd.random() < 0.5
                pairs.append((await theirs.make_toggle(state), await ours.make_toggle(state)))
            elif op == "turn" and pairs:
                t, o = rnd.choice(pairs)
                state = rnd.random() < 0.5
                await t.turn_to(state)
                await o.turn_to(state)
            elif op == "drop" and pairs:
                t, o = rnd.choice(pairs)  # may already be gone: dropping it again changes nothing
                await theirs.drop_toggle(t)
                await ours.drop_toggle(o)
            elif op == "drops" and pairs:
                chosen = rnd.sample(pairs, min(len(pairs), 3))
                await theirs.drop_toggles(t for t, _ in chosen)
                await ours.drop_toggles(o for _, o in chosen)
            assert ours.is_on() == theirs.is_on()
            assert len(ours) == len(theirs)


async def test_start_up_wait_is_linear_in_the_objects_listed() -> None:
    small, large = await simulate_start_up(CountingToggleSet, 300), await simulate_start_up(CountingToggleSet, 1200)
    # per object: the watcher's check, make and drop (before and after each), the waiter's first check and its one
    # wake-up at the end: 7
    assert small <= 8 * 300 and large <= 8 * 1200
    assert large <= 4.5 * small  # 4× the objects, about 4× the work


async def test_kopfs_own_start_up_wait_is_quadratic() -> None:
    """The cause, measured the same way: every make and drop wakes every waiter."""
    small, large = await simulate_start_up(KopfToggleSet, 100), await simulate_start_up(KopfToggleSet, 400)
    assert small >= 100 * 100 / 4 and large >= 400 * 400 / 4  # n²/2 measured
    assert large >= 12 * small  # 4× the objects, about 16× the work


def test_check_accepts_the_verified_kopf_and_refuses_another_source() -> None:
    kopf_toggles.check()
    with pytest.raises(KopfInternalsChanged, match=r"VERIFIED_SOURCE_SHA256.*CHANSCALE_KOPF_TOGGLESET=kopf"):
        kopf_toggles.check(asyncio.locks)


def test_install_is_idempotent_and_can_be_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kopf_toggles.ENV, raising=False)
    assert kopf_toggles.install() and kopf_toggles.install()
    assert aiotoggles.ToggleSet is CountingToggleSet
    monkeypatch.setenv(kopf_toggles.ENV, "kopf")
    assert not kopf_toggles.install()
    assert aiotoggles.ToggleSet is KopfToggleSet


def test_install_refuses_an_unverified_kopf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kopf_toggles.ENV, raising=False)
    monkeypatch.setattr(kopf_toggles, "VERIFIED_SOURCE_SHA256", "0" * 64)
    with pytest.raises(KopfInternalsChanged, match=r"kopf 1\.45\.2"):
        kopf_toggles.install()
    assert aiotoggles.ToggleSet is KopfToggleSet  # never half-patched


def test_the_startup_handler_keeps_kopfs_own_set_on_an_unverified_kopf(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from chanscale.handlers import fix_startup_wait

    monkeypatch.delenv(kopf_toggles.ENV, raising=False)
    fix_startup_wait(logging.getLogger("test"))
    assert aiotoggles.ToggleSet is CountingToggleSet
    aiotoggles.ToggleSet = KopfToggleSet  # type: ignore[misc]
    monkeypatch.setattr(kopf_toggles, "VERIFIED_SOURCE_SHA256", "0" * 64)
    with caplog.at_level(logging.WARNING, logger="test"):
        fix_startup_wait(logging.getLogger("test"))  # the operator still starts
    assert aiotoggles.ToggleSet is KopfToggleSet
    assert "CHANSCALE_KOPF_TOGGLESET" in caplog.text and "quadratic" in caplog.text
