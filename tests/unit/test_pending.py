import pytest

from monlat.agent.probe.icmp import Ignored, Packet
from monlat.agent.probe.pending import Outcome, PendingProbes, Result

COOKIE = b"monlat01"
IDENT = 0x1234


def reply(
    peer: str = "10.0.0.2", sequence: int = 1, token: int | None = 100, **kw: object
) -> Packet:
    fields: dict[str, object] = {
        "is_error": False, "peer": peer, "ident": IDENT, "sequence": sequence,
        "cookie": COOKIE, "token": token, "icmp_type": 0, "icmp_code": 0, "reporter": peer,
    }  # fmt: skip
    fields.update(kw)
    return Packet(**fields)  # type: ignore[arg-type]


@pytest.fixture
def pending() -> PendingProbes:
    table = PendingProbes(COOKIE, IDENT)
    table.add("node2", "10.0.0.2", 1, 100, sent_ns=1_000_000_000, deadline=10.0)
    return table


def test_matching_reply_yields_rtt_from_timestamps(pending: PendingProbes) -> None:
    outcome = pending.match(reply(), received_ns=1_000_436_000)
    assert outcome == Outcome("node2", "10.0.0.2", 1, Result.REPLY, rtt_s=pytest.approx(0.000436))
    assert len(pending) == 0


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (reply(cookie=b"other!!!"), Ignored.BAD_COOKIE),
        (reply(token=101), Ignored.UNEXPECTED),
        (reply(sequence=2), Ignored.WRONG_SEQUENCE),
        (reply(peer="10.0.0.3"), Ignored.WRONG_SOURCE),
        (reply(ident=IDENT + 1), Ignored.FOREIGN),
        (reply(cookie=None, token=None), Ignored.TRUNCATED),
    ],
)
def test_mismatches_never_become_measurements(
    pending: PendingProbes, packet: Packet, reason: Ignored
) -> None:
    assert pending.match(packet, received_ns=2_000_000_000) is reason
    assert len(pending) == 1  # the real reply can still arrive
    assert isinstance(pending.match(reply(), received_ns=1_000_500_000), Outcome)


def test_duplicate_and_late_replies(pending: PendingProbes) -> None:
    assert isinstance(pending.match(reply(), 1_000_100_000), Outcome)
    assert pending.match(reply(), 1_000_200_000) is Ignored.DUPLICATE
    pending.add("node2", "10.0.0.2", 2, 101, sent_ns=2_000_000_000, deadline=11.0)
    assert pending.expire(now=11.0) == [Outcome("node2", "10.0.0.2", 2, Result.TIMEOUT)]
    assert pending.match(reply(sequence=2, token=101), 3_000_000_000) is Ignored.LATE


def test_expire_only_past_deadlines_in_order() -> None:
    table = PendingProbes(COOKIE, None)
    for i in range(5):
        table.add("p", "10.0.0.2", i, 200 + i, sent_ns=0, deadline=float(i))
    assert [o.sequence for o in table.expire(now=2.0)] == [0, 1, 2]
    assert table.next_deadline() == 3.0
    assert len(table) == 2


def test_answered_probe_does_not_expire(pending: PendingProbes) -> None:
    pending.match(reply(), 1_000_100_000)
    assert pending.expire(now=100.0) == []
    assert pending.next_deadline() is None


def test_icmp_error_ends_probe_even_without_quoted_payload(pending: PendingProbes) -> None:
    error = reply(is_error=True, cookie=None, token=None, icmp_type=3, icmp_code=1,
                  reporter="10.0.0.254")  # fmt: skip
    outcome = pending.match(error, 1_000_100_000)
    assert isinstance(outcome, Outcome)
    assert outcome.result is Result.ERROR and outcome.rtt_s is None
    assert "10.0.0.254" in (outcome.detail or "")


def test_datagram_socket_ignores_identifier() -> None:
    table = PendingProbes(COOKIE, None)
    table.add("node2", "10.0.0.2", 1, 100, sent_ns=0, deadline=1.0)
    assert isinstance(table.match(reply(ident=999), 1000), Outcome)


def test_forgotten_peer_is_not_lost(pending: PendingProbes) -> None:
    pending.forget_peer("10.0.0.2")
    assert pending.expire(now=100.0) == []
    assert pending.match(reply(), 1_000_100_000) is Ignored.UNEXPECTED


def test_wall_clock_step_backwards_is_an_error_not_negative_rtt(pending: PendingProbes) -> None:
    outcome = pending.match(reply(), received_ns=999_000_000)
    assert isinstance(outcome, Outcome)
    assert outcome.result is Result.ERROR


def test_memory_of_finished_probes_is_bounded() -> None:
    table = PendingProbes(COOKIE, IDENT, memory=10)
    for token in range(100):
        table.add("p", "10.0.0.2", token, token, sent_ns=0, deadline=0.0)
        table.match(reply(sequence=token, token=token), 1)
    assert table.match(reply(sequence=0, token=0), 1) is Ignored.UNEXPECTED
    assert table.match(reply(sequence=99, token=99), 1) is Ignored.DUPLICATE


def test_kernel_transmit_time_replaces_the_user_space_one(pending: PendingProbes) -> None:
    assert pending.set_sent_ns(100, 1_000_040_000)
    outcome = pending.match(reply(), received_ns=1_000_050_000)
    assert isinstance(outcome, Outcome)
    assert outcome.rtt_s == pytest.approx(10e-6)
    assert not pending.set_sent_ns(100, 1)  # answered: nothing left to re-time


def test_reply_read_after_the_deadline_counts_by_its_kernel_time() -> None:
    table = PendingProbes(COOKIE, IDENT, timeout_s=0.5)
    table.add("node2", "10.0.0.2", 1, 100, sent_ns=1_000_000_000, deadline=10.0)
    table.add("node2", "10.0.0.2", 2, 101, sent_ns=1_000_000_000, deadline=10.0)
    in_time = table.match(reply(), received_ns=1_499_000_000)
    assert isinstance(in_time, Outcome) and in_time.result is Result.REPLY
    too_late = table.match(reply(sequence=2, token=101), received_ns=1_501_000_000)
    assert isinstance(too_late, Outcome) and too_late.result is Result.TIMEOUT
    assert table.match(reply(sequence=2, token=101), received_ns=1_600_000_000) is Ignored.LATE


def test_transmit_times_for_a_batch_retime_only_waiting_probes(pending: PendingProbes) -> None:
    pending.add("node3", "10.0.0.3", 2, 101, sent_ns=1_000_000_000, deadline=10.0)
    assert pending.match(reply(sequence=2, token=101, peer="10.0.0.3"), 1_000_100_000)
    assert pending.set_sent_times([(100, 1_000_040_000), (101, 1), (999, 1)]) == 1
    outcome = pending.match(reply(), received_ns=1_000_050_000)
    assert isinstance(outcome, Outcome) and outcome.rtt_s == pytest.approx(10e-6)


@pytest.mark.parametrize("finished", [9, 10, 11, 25, 31])
def test_the_last_memory_finished_probes_are_always_remembered(finished: int) -> None:
    table = PendingProbes(COOKIE, IDENT, memory=10)
    order: list[tuple[int, Ignored]] = []  # in the order the probes finished
    for token in range(finished):
        table.add("p", "10.0.0.2", token, token, sent_ns=0, deadline=float(token))
        if token % 3:
            table.match(reply(sequence=token, token=token), 1)
            order.append((token, Ignored.DUPLICATE))
        else:
            assert [o.sequence for o in table.expire(now=float(token))] == [token]
            order.append((token, Ignored.LATE))
    for token, expected in order[-10:]:
        assert table.match(reply(sequence=token, token=token), 2) is expected, token
