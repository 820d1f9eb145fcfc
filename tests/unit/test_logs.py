import io

from monlat.agent.logs import EventLog, MeasurementLog, measurement_line


class CountingStream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_measurement_line_is_the_original_format() -> None:
    line = measurement_line("node2", "node3", 0.3874)
    assert line == 'latency_between_nodes{from="node2",to="node3"} 0.387'


def test_measurement_log_flushes_at_most_every_quarter_second() -> None:
    now = [0.0]
    stream = CountingStream()
    log = MeasurementLog(stream, "a", clock=lambda: now[0])
    for _ in range(100):
        log.write("b", 0.001)
    assert stream.flushes == 0
    now[0] = 0.3
    log.write("b", 0.002)
    assert stream.flushes == 1
    assert stream.getvalue().splitlines()[-1] == 'latency_between_nodes{from="a",to="b"} 2.000'


def test_event_log_is_logfmt_with_quoting() -> None:
    stream = io.StringIO()
    EventLog(stream).warning("peer_skipped", peer="n1", reason='no "socket" here')
    line = stream.getvalue().strip()
    assert line.startswith("time=")
    assert ' level=warn event=peer_skipped peer=n1 reason="no \\"socket\\" here"' in line


def test_measurement_lines_carry_family_and_network_when_the_series_do() -> None:
    stream = io.StringIO()
    log = MeasurementLog(stream, "a", network="pod")
    log.write("b/ipv6", 0.0004)
    log.write("b", 0.0005)
    assert stream.getvalue().splitlines() == [
        'latency_between_nodes{from="a",to="b",family="ipv6",network="pod"} 0.400',
        'latency_between_nodes{from="a",to="b",network="pod"} 0.500',
    ]


def test_a_value_ending_in_a_newline_is_quoted_so_the_record_stays_one_line() -> None:
    stream = io.StringIO()
    EventLog(stream).warning("library", message="refused\n")
    assert stream.getvalue().count("\n") == 1 and 'message="refused\\n"' in stream.getvalue()
