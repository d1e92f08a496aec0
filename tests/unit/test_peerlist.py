"""Whether policy calls carry the namespace's pool list (chanscale.peerlist)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chanscale.peerlist import PeerListProbe, make_probe, reads_peer_list
from chanscale.policy import AllowAllGate, LocalOpaGate, default_policies_dir

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "src",
    [
        "others := [x | some x in input.namespace.pools]",
        'n := count(input["namespace"]["pools"])',
        "n := count(input.namespace [ k ])",
        "ns := input.namespace\nn := count(ns.pools)",
        'p := object.get(input.namespace, "pools", [])',
        'p := object.get(input, ["namespace", "pools"], [])',
        "p := input . namespace . pools",
    ],
)
def test_a_module_that_may_read_the_list_is_seen(src: str) -> None:
    assert reads_peer_list(["package x\n", src])


@pytest.mark.parametrize(
    "src",
    [
        "n := input.namespace.name",
        'n := input.namespace["others"].claimed',
        "n := input.namespace.others.claimed",
        "n := input.pool.metadata.namespace",
        "n := data.chanscale.config.namespaces[ns]",
        "# see input.namespaces\nx := 1",
        "s := input.pool.spec.channel # the namespace's channel",
    ],
)
def test_a_module_that_does_not_read_the_list_is_not(src: str) -> None:
    assert not reads_peer_list(["package x\n", src])


def test_the_shipped_policies_do_not_read_the_list() -> None:
    gate = LocalOpaGate([default_policies_dir()])
    sources = asyncio.run(gate.policy_sources())
    assert len(sources) >= 5  # every shipped module was read, tests left out
    assert not any(src.lstrip().startswith("package chanscale.budget_test") for src in sources)
    assert not reads_peer_list(sources)


def test_a_local_policy_file_that_reads_the_list_turns_it_on(tmp_path: Path) -> None:
    (tmp_path / "mine.rego").write_text("package mine\n\nn := count(input.namespace.pools)\n")
    (tmp_path / "mine_test.rego").write_text("package mine_test\n\nx := input.namespace\n")
    assert asyncio.run(settled(make_probe("auto", LocalOpaGate([tmp_path])))) is True
    (tmp_path / "mine.rego").write_text("package mine\n\nn := input.namespace.others.pools\n")
    assert asyncio.run(settled(make_probe("auto", LocalOpaGate([tmp_path])))) is False


async def settled(probe: Any) -> bool:
    """The probe's answer once its first check is done (a call never waits for one)."""
    first = await probe()
    if isinstance(probe, PeerListProbe):
        assert first is True  # before the first check: the list goes
        await probe.settle()
    return bool(await probe())


def test_modes() -> None:
    assert asyncio.run(make_probe("list", AllowAllGate())()) is True
    assert asyncio.run(make_probe("summary", object())()) is False
    assert asyncio.run(settled(make_probe("auto", AllowAllGate()))) is False  # no policies: nothing reads it
    assert asyncio.run(make_probe("auto", object())()) is True  # a gate that cannot tell: send it
    with pytest.raises(ValueError, match="--policy-peers must be one of auto, list, summary"):
        make_probe("some", AllowAllGate())


def test_the_probe_rechecks_after_its_period_and_sends_the_list_when_it_cannot_read() -> None:
    now = [0.0]
    calls: list[int] = []
    answers: list[list[str] | Exception] = [["x := input.namespace.others"], RuntimeError("503"), []]

    async def sources() -> list[str]:
        calls.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    probe = PeerListProbe(sources, every=60.0, clock=lambda: now[0])

    async def run() -> list[bool]:
        out = [await settled(probe), await probe()]  # the second within the period: no new read
        now[0] = 61.0
        out.append(await probe())  # stale: answers from the last check, starts the next
        await probe.settle()
        out.append(await probe())  # that read failed: the list goes
        now[0] = 122.0
        await probe()
        await probe.settle()
        out.append(await probe())
        return out

    assert asyncio.run(run()) == [False, False, False, True, False]
    assert len(calls) == 3


def test_concurrent_callers_share_one_read() -> None:
    calls: list[int] = []

    async def sources() -> list[str]:
        calls.append(1)
        await asyncio.sleep(0.01)
        return []

    probe = PeerListProbe(sources)

    async def run() -> list[bool]:
        answers = list(await asyncio.gather(*(probe() for _ in range(20))))
        await probe.settle()
        return [*answers, *(await asyncio.gather(*(probe() for _ in range(20))))]

    assert asyncio.run(run()) == [True] * 20 + [False] * 20  # none waited; the list went until the check answered
    assert len(calls) == 1
