"""FakeGateway switches, ledger, determinism and token conventions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from billing_engine.gateway import (
    ChargeStatus,
    DeclineKind,
    FakeGateway,
    GatewayError,
    IdempotencyConflict,
)

from .test_contract import charge_request, refund_request


def statuses(gateway: FakeGateway, token: str, n: int, prefix: str = "k") -> list[str]:
    """Charge ``token`` n times with fresh keys; the outcomes as short strings."""
    out = []
    for i in range(n):
        result = gateway.charge(charge_request(token, key=f"{prefix}{i}"))
        out.append(result.decline_code or result.status.value)
    return out


def test_recover_after_n_token(fake: FakeGateway) -> None:
    got = statuses(fake, "pm_fake_recover_after_2", 4)
    assert got == ["insufficient_funds", "insufficient_funds", "succeeded", "succeeded"]
    assert fake.charge(charge_request("pm_fake_recover_after_2", key="k0")).decline_kind is (
        DeclineKind.SOFT
    )  # a replay of the first attempt: still the saved decline


def test_decline_code_token(fake: FakeGateway) -> None:
    assert statuses(fake, "pm_fake_decline_expired_card", 2) == ["expired_card", "expired_card"]


def test_decline_after_n_token(fake: FakeGateway) -> None:
    got = statuses(fake, "pm_fake_decline_stolen_card_after_2", 3)
    assert got == ["succeeded", "succeeded", "stolen_card"]


def test_any_pm_token_is_a_visa(fake: FakeGateway) -> None:
    assert statuses(fake, "pm_fake_alice", 1) == ["succeeded"]
    card = fake.card_details("pm_fake_alice")
    assert (card.brand, card.last4) == ("visa", "4242")
    assert card.fingerprint != fake.card_details("pm_fake_bob").fingerprint
    with pytest.raises(GatewayError, match="no such payment method"):
        fake.card_details("4242424242424242")


def test_script_overrides_then_resumes(fake: FakeGateway) -> None:
    fake.script("pm_card_visa", ["insufficient_funds", "insufficient_funds", "succeed"])
    assert statuses(fake, "pm_card_visa", 4) == [
        "insufficient_funds",
        "insufficient_funds",
        "succeeded",
        "succeeded",
    ]


def test_script_unknown_and_unreachable(fake: FakeGateway) -> None:
    fake.script("pm_card_visa", ["unknown", "unreachable"])
    assert statuses(fake, "pm_card_visa", 2) == ["unknown", "unknown"]
    assert fake.find_charge("k0") is not None  # went through
    assert fake.find_charge("k1") is None  # never arrived
    assert fake.total_collected("USD") == 1999


def test_fail_next_declines_once(fake: FakeGateway) -> None:
    fake.fail_next("lost_card")
    first, second = (fake.charge(charge_request(key=k)) for k in ("a", "b"))
    assert (first.decline_code, first.decline_kind) == ("lost_card", DeclineKind.HARD)
    assert second.status is ChargeStatus.SUCCEEDED


def test_unknown_next_charged(fake: FakeGateway) -> None:
    fake.unknown_next()
    assert fake.charge(charge_request()).status is ChargeStatus.UNKNOWN
    assert len(fake.ledger) == 1
    found = fake.find_charge("inv_1:attempt_1")
    assert found and found.status is ChargeStatus.SUCCEEDED


def test_unknown_next_never_arrived(fake: FakeGateway) -> None:
    fake.unknown_next(charged=False)
    assert fake.charge(charge_request()).status is ChargeStatus.UNKNOWN
    assert fake.ledger == []
    assert fake.find_charge("inv_1:attempt_1") is None
    assert fake.charge(charge_request()).status is ChargeStatus.SUCCEEDED  # safe to resend


def test_ledger_and_totals(fake: FakeGateway) -> None:
    usd = fake.charge(charge_request(key="a", metadata={"invoice_id": "inv_a"}))
    fake.charge(charge_request(key="b", amount_minor=500, currency="EUR"))
    fake.charge(charge_request("pm_card_chargeDeclined", key="c"))
    assert usd.gateway_charge_id
    fake.refund(refund_request(usd.gateway_charge_id, 999, "r1"))
    charges = [e for e in fake.ledger if e.kind == "charge"]
    assert [(e.amount_minor, e.currency, e.idempotency_key) for e in charges] == [
        (1999, "USD", "a"),
        (500, "EUR", "b"),
    ]
    assert charges[0].metadata == {"invoice_id": "inv_a"}
    assert charges[0].token == "pm_card_visa" and charges[0].id == usd.gateway_charge_id
    [refund] = [e for e in fake.ledger if e.kind == "refund"]
    assert (refund.charge_id, refund.amount_minor, refund.idempotency_key) == (
        usd.gateway_charge_id,
        999,
        "r1",
    )
    assert fake.total_collected("usd") == 1999
    assert fake.total_refunded("USD") == 999
    assert fake.net_collected("USD") == 1000
    assert fake.total_collected("EUR") == 500


def test_refund_currency_must_match(fake: FakeGateway) -> None:
    charge_id = fake.charge(charge_request()).gateway_charge_id
    assert charge_id
    with pytest.raises(GatewayError, match="currency"):
        fake.refund(refund_request(charge_id, 100, "r1", currency="EUR"))


def test_refund_too_much_names_what_is_left(fake: FakeGateway) -> None:
    charge_id = fake.charge(charge_request()).gateway_charge_id
    assert charge_id
    fake.refund(refund_request(charge_id, 1500, "r1"))
    with pytest.raises(GatewayError, match=r"exceeds the 499 USD still refundable"):
        fake.refund(refund_request(charge_id, 500, "r2"))


def test_key_reused_across_operations_conflicts(fake: FakeGateway) -> None:
    charge_id = fake.charge(charge_request(key="shared")).gateway_charge_id
    assert charge_id
    with pytest.raises(IdempotencyConflict):
        fake.refund(refund_request(charge_id, 100, "shared"))


def test_same_seed_same_outcomes() -> None:
    def run(seed: int) -> list[str]:
        gateway = FakeGateway(transient_error_rate=0.6, seed=seed)
        return statuses(gateway, "pm_card_visa", 40)

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert {"succeeded", "unknown"} <= set(run(7))


def test_transient_errors_never_double_charge() -> None:
    gateway = FakeGateway(transient_error_rate=0.5, seed=3)
    results = [gateway.charge(charge_request(key=f"k{i}")) for i in range(200)]
    unknown = [i for i, r in enumerate(results) if r.status is ChargeStatus.UNKNOWN]
    assert unknown  # some exhausted their retries
    # every key moved money at most once; unknown ones are either found or never arrived
    keys = [e.idempotency_key for e in gateway.ledger]
    assert len(keys) == len(set(keys))
    for i in unknown:
        found = gateway.find_charge(f"k{i}")
        assert (found is None) == (f"k{i}" not in keys)


def test_no_transient_errors_means_one_try(fake: FakeGateway) -> None:
    assert statuses(fake, "pm_card_visa", 20) == ["succeeded"] * 20


def test_latency_sleeps_per_call() -> None:
    slept: list[float] = []
    gateway = FakeGateway(latency=0.25, sleep=slept.append)
    gateway.charge(charge_request())
    gateway.card_details("pm_card_visa")
    assert slept == [0.25, 0.25]


def test_calls_are_recorded(fake: FakeGateway) -> None:
    fake.charge(charge_request())
    fake.find_charge("inv_1:attempt_1")
    assert list(fake.calls) == [("charge", "inv_1:attempt_1"), ("find_charge", "inv_1:attempt_1")]


def test_concurrent_charges_with_one_key_move_money_once(fake: FakeGateway) -> None:
    results = []

    def worker() -> None:
        results.append(fake.charge(charge_request()))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.gateway_charge_id for r in results}) == 1
    assert len(fake.ledger) == 1


def test_bad_switch_values_are_refused() -> None:
    with pytest.raises(ValueError):
        FakeGateway(transient_error_rate=1.5)
    with pytest.raises(ValueError):
        FakeGateway().script("pm_card_visa", [""])


def test_a_durable_ledger_shared_by_many_threads_and_two_instances_records_each_charge_once(tmp_path: Path) -> None:
    """One SQLite connection per instance, used by every thread (the run-cycle's 64
    lanes): each key charged once however the calls interleave, and every charge is
    known to a new instance on the file (what a restarted process sees)."""
    path = str(tmp_path / "ledger.db")
    first, second = FakeGateway(ledger_path=path), FakeGateway(ledger_path=path)
    keys = [f"in_{i}:1" for i in range(200)]
    results: dict[str, list[str | None]] = {k: [] for k in keys}

    def lane(gw: FakeGateway, mine: list[str]) -> None:
        for k in mine:
            results[k].append(gw.charge(charge_request(key=k)).gateway_charge_id)

    threads = [threading.Thread(target=lane, args=(gw, keys[i::8]))
               for i in range(8) for gw in (first, second)]  # every key sent by both instances
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(set(ids)) == 1 and len(ids) == 2 for ids in results.values())  # replayed, not charged twice
    fresh = FakeGateway(ledger_path=path)
    charged = [e.idempotency_key for e in fresh.ledger if e.kind == "charge"]
    assert sorted(charged) == sorted(keys)
    assert all(fresh.find_charge(k) is not None for k in keys)


def _run_as_one_group(gw: FakeGateway, threads: list[threading.Thread]) -> None:
    """Start ``threads`` (each making one call) while a commit is "in progress" (the
    gateway's lock held), so that all but the first queue for the next group commit."""
    with gw._lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(gw._pending) < len(threads) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join()


def test_calls_queued_together_commit_together_and_an_error_undoes_only_its_own_call(tmp_path: Path) -> None:
    """The durable ledger's group commit: calls that queue while another commit runs share
    the next transaction. Each caller gets its own answer; a call that fails inside the
    group (a key reused with another amount) writes nothing and fails only its caller; no
    answer comes back before its charge is on the file."""
    path = str(tmp_path / "ledger.db")
    gw = FakeGateway(ledger_path=path)
    gw.charge(charge_request(key="in_x:1", amount_minor=1700))
    groups: list[int] = []
    run_group = gw._run_group

    def counting(group: list) -> None:  # type: ignore[type-arg]
        groups.append(len(group))
        run_group(group)

    gw._run_group = counting  # type: ignore[method-assign]
    answers: dict[str, object] = {}

    def call(key: str, amount: int) -> None:
        try:
            answers[key] = gw.charge(charge_request(key=key, amount_minor=amount))
        except IdempotencyConflict as exc:
            answers[key] = exc

    keys = [f"in_{i}:1" for i in range(12)]
    threads = [threading.Thread(target=call, args=(k, 1700)) for k in keys]
    threads.append(threading.Thread(target=call, args=("in_x:1", 999)))  # reused key, other amount
    _run_as_one_group(gw, threads)
    assert max(groups) > 1  # calls did share a transaction
    assert isinstance(answers["in_x:1"], IdempotencyConflict)
    assert all(answers[k].status == ChargeStatus.SUCCEEDED for k in keys)  # type: ignore[attr-defined]
    fresh = FakeGateway(ledger_path=path)  # what another process reads from the file
    charged = sorted(e.idempotency_key for e in fresh.ledger if e.kind == "charge")
    assert charged == sorted([*keys, "in_x:1"])  # the conflicting call moved no money
    assert fresh.total_collected("USD") == 1700 * 13
    assert all(fresh.find_charge(k) == answers[k] for k in keys)


def test_a_call_that_fails_after_writing_leaves_nothing_of_itself_in_its_group(tmp_path: Path) -> None:
    """A call that has already written its ledger row when it fails (here: the write after
    it raises) is undone on its own: the other calls of its group commit, and a fresh
    instance on the file sees their charges, not the failed one's."""
    path = str(tmp_path / "ledger.db")
    gw = FakeGateway(ledger_path=path)
    record = gw._record

    def failing_after_the_ledger_row(entry):  # type: ignore[no-untyped-def]
        record(entry)
        if entry.idempotency_key == "in_bad:1":
            raise RuntimeError("disk full")

    gw._record = failing_after_the_ledger_row  # type: ignore[method-assign]
    answers: dict[str, object] = {}

    def call(key: str) -> None:
        try:
            answers[key] = gw.charge(charge_request(key=key))
        except RuntimeError as exc:
            answers[key] = exc

    keys = [f"in_{i}:1" for i in range(6)]
    threads = [threading.Thread(target=call, args=(k,)) for k in [*keys[:3], "in_bad:1", *keys[3:]]]
    _run_as_one_group(gw, threads)
    assert isinstance(answers["in_bad:1"], RuntimeError)
    fresh = FakeGateway(ledger_path=path)
    assert sorted(e.idempotency_key for e in fresh.ledger) == sorted(keys)
    assert fresh.find_charge("in_bad:1") is None  # no saved answer either: a retry charges it once
    assert all(fresh.find_charge(k) == answers[k] for k in keys)


def test_a_forked_process_charges_on_its_own_connection_with_its_own_ids(tmp_path: Path) -> None:
    """A worker forked from a process that already used the ledger (multiprocessing's
    fork) opens its own connection and draws charge ids of its own."""
    import multiprocessing

    path = str(tmp_path / "ledger.db")
    gw = FakeGateway(ledger_path=path)
    gw.charge(charge_request(key="in_parent:1"))

    def child() -> None:
        for i in range(20):
            gw.charge(charge_request(key=f"in_child_{i}:1"))

    procs = [multiprocessing.get_context("fork").Process(target=child) for _ in range(2)]
    for p in procs:
        p.start()
    for i in range(20):
        gw.charge(charge_request(key=f"in_parent_{i}:1"))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    entries = FakeGateway(ledger_path=path).ledger
    assert len(entries) == 41  # both children sent the same 20 keys: replayed, not charged twice
    assert len({e.id for e in entries}) == 41


def test_calls_made_together_are_on_the_file_only_when_the_block_ends(tmp_path: Path) -> None:
    """``together()`` (the run-cycle's calls while the gateway answers at once): every
    call is answered at once, a reused key with another amount fails only its own call,
    and the charges reach the file -- what another process sees -- when the block ends."""
    path = str(tmp_path / "ledger.db")
    gw = FakeGateway(ledger_path=path)
    gw.charge(charge_request(key="in_x:1", amount_minor=1700))
    keys = [f"in_{i}:1" for i in range(5)]
    with gw.together():
        answers = [gw.charge(charge_request(key=k, amount_minor=1700)) for k in keys]
        with pytest.raises(IdempotencyConflict):
            gw.charge(charge_request(key="in_x:1", amount_minor=999))
        assert gw.charge(charge_request(key=keys[0], amount_minor=1700)) == answers[0]  # a replay in the block
        assert [e.idempotency_key for e in FakeGateway(ledger_path=path).ledger] == ["in_x:1"]  # not yet on the file
    fresh = FakeGateway(ledger_path=path)
    assert sorted(e.idempotency_key for e in fresh.ledger) == sorted([*keys, "in_x:1"])
    assert fresh.total_collected("USD") == 1700 * 6
    assert all(fresh.find_charge(k) == a for k, a in zip(keys, answers, strict=True))


def test_calls_made_together_in_a_block_that_fails_never_happened(tmp_path: Path) -> None:
    """A block that raises (a process killed inside it: the same for the file) records
    none of its calls, so a retry with the same keys charges each once."""
    path = str(tmp_path / "ledger.db")
    gw = FakeGateway(ledger_path=path)
    with pytest.raises(RuntimeError), gw.together():
        gw.charge(charge_request(key="in_1:1"))
        raise RuntimeError("killed")
    fresh = FakeGateway(ledger_path=path)
    assert fresh.ledger == [] and fresh.find_charge("in_1:1") is None
    fresh.charge(charge_request(key="in_1:1"))
    assert len(FakeGateway(ledger_path=path).ledger) == 1


def test_another_threads_call_waits_for_a_block_of_calls_together(tmp_path: Path) -> None:
    gw = FakeGateway(ledger_path=str(tmp_path / "ledger.db"))
    other: list[str] = []
    t = threading.Thread(target=lambda: other.append(gw.charge(charge_request(key="in_2:1")).status.value))
    with gw.together():
        gw.charge(charge_request(key="in_1:1"))
        t.start()
        time.sleep(0.1)
        assert other == []  # waits for the block's commit
    t.join(10)
    assert other == ["succeeded"]
    assert [e.idempotency_key for e in FakeGateway(ledger_path=gw._store.path).ledger] == ["in_1:1", "in_2:1"]  # type: ignore[union-attr]
