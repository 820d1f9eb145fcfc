"""`monlat matrix`: exposition parsing, the matrix, its renderings, watch mode and the CLI."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monlat.common.errors import ConfigError
from monlat.tools.matrix.command import (
    CLEAR_SCREEN,
    load_matrix,
    parse_matrix_args,
    run_matrix,
    watch,
    watch_frames,
)
from monlat.tools.matrix.model import (
    Cell,
    Matrix,
    View,
    build_matrix,
    median_excluding,
    natural_key,
    order_nodes,
)
from monlat.tools.matrix.render import (
    TableStyle,
    abbreviate,
    color_depth,
    render_csv,
    render_json,
    render_table,
)
from monlat.tools.scrape import (
    ExpositionError,
    Sample,
    fetch_text,
    parse_exposition,
    parse_sample_line,
    parse_url,
)

ROOT = Path(__file__).parents[2]
ESC = "\x1b["

# --- fixtures shared with test_diagnose ----------------------------------------------------------


@dataclass(frozen=True)
class PairData:
    latency_ms: float | None = 0.4
    loss_ratio: float = 0.0
    jitter_ms: float = 0.01
    probes: int = 60


def exposition(
    pairs: Mapping[tuple[str, str], PairData],
    *,
    zones: Mapping[str, str] | None = None,
    collector: bool = True,
    extra: str = "",
) -> str:
    """An exposition like the collector's (job/instance labels) or an agent's."""

    def labels(src: str, dst: str, **more: str) -> str:
        found = {"from": src, "to": dst, **more}
        if zones is not None:
            found.update(from_zone=zones.get(src, ""), to_zone=zones.get(dst, ""))
        if collector:
            found.update(job="monlat", instance=src)
        return ",".join(f'{key}="{value}"' for key, value in found.items())

    lines = ["# HELP latency_between_nodes RTT in ms", "# TYPE latency_between_nodes gauge"]
    for (src, dst), data in pairs.items():
        if data.latency_ms is not None:
            lines.append(f"latency_between_nodes{{{labels(src, dst)}}} {data.latency_ms}")
    lines.append("# TYPE monlat_loss_ratio gauge")
    lines += [f"monlat_loss_ratio{{{labels(s, d)}}} {p.loss_ratio}" for (s, d), p in pairs.items()]
    lines.append("# TYPE monlat_jitter_seconds gauge")
    lines += [
        f"monlat_jitter_seconds{{{labels(s, d)}}} {p.jitter_ms / 1000}"
        for (s, d), p in pairs.items()
    ]
    lines.append("# TYPE monlat_probes_total counter")
    for (src, dst), data in pairs.items():
        lost = round(data.probes * data.loss_ratio)
        lines.append(
            f"monlat_probes_total{{{labels(src, dst, result='reply')}}} {data.probes - lost}"
        )
        lines.append(f"monlat_probes_total{{{labels(src, dst, result='timeout')}}} {lost}")
    return "\n".join(lines) + "\n" + extra


def full_mesh(
    nodes: list[str], base_ms: float = 0.4, seed: int = 7
) -> dict[tuple[str, str], PairData]:
    """Every ordered pair, with a little deterministic spread around `base_ms`."""
    spread = random.Random(seed)
    return {
        (src, dst): PairData(latency_ms=round(base_ms * (0.9 + 0.2 * spread.random()), 3))
        for src in nodes
        for dst in nodes
        if src != dst
    }


class _Handler(BaseHTTPRequestHandler):
    routes: Mapping[str, tuple[int, bytes, Mapping[str, str]]] = {}

    def do_GET(self) -> None:
        status, body, headers = self.routes.get(self.path, (404, b"not found\n", {}))
        self.send_response(status)
        for key, value in {"Content-Type": "text/plain; version=0.0.4", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(routes: Mapping[str, tuple[int, bytes, Mapping[str, str]]]) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 for the duration; yields its base URL."""
    handler = type("Handler", (_Handler,), {"routes": dict(routes)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def serve_text(text: str) -> Iterator[str]:
    with serve({"/metrics": (200, text.encode(), {})}) as base:
        yield base + "/metrics"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_monlat(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "monlat", *args],
        capture_output=True, text=True, timeout=30, env=full_env, check=False,
    )  # fmt: skip


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], setting: str, words: str
) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"monlat: error: {setting}: "), lines[0]
    assert words in lines[0]


# --- parsing the exposition ----------------------------------------------------------------------

COLLECTOR_TEXT = r"""# HELP latency_between_nodes Round-trip time in ms
# TYPE latency_between_nodes gauge
latency_between_nodes{from="node1",instance="node1",job="monlat",to="node2"} 0.436
latency_between_nodes{from="node2",instance="node2",job="monlat",to="node1"} 0.439 1712345678000
# a free comment
monlat_loss_ratio{from="node1",to="node2",instance="node1",job="monlat"} NaN

monlat_jitter_seconds{from="node1",to="node2",} +Inf
weird{path="C:\\dir\\",quote="say \"hi\"",nl="a\nb",other="\t"} -Inf
target_info{job="monlat",instance="node1",service_name="monlat"} 1
# EOF
"""


def test_parse_collector_exposition() -> None:
    samples = parse_exposition(COLLECTOR_TEXT)
    assert [s.name for s in samples] == [
        "latency_between_nodes",
        "latency_between_nodes",
        "monlat_loss_ratio",
        "monlat_jitter_seconds",
        "weird",
        "target_info",
    ]
    first = samples[0]
    assert first.labels == {"from": "node1", "instance": "node1", "job": "monlat", "to": "node2"}
    assert first.value == 0.436
    assert samples[1].value == 0.439  # the timestamp is read and dropped
    assert math.isnan(samples[2].value)
    assert samples[3].value == math.inf and samples[3].labels == {"from": "node1", "to": "node2"}
    weird = samples[4]
    assert weird.value == -math.inf
    assert weird.labels == {"path": "C:\\dir\\", "quote": 'say "hi"', "nl": "a\nb", "other": "\\t"}


def test_parse_edge_forms() -> None:
    assert parse_sample_line("up 1") == Sample("up", {}, 1.0)
    assert parse_sample_line("up{} 1e3") == Sample("up", {}, 1000.0)
    assert parse_sample_line('up{ a = "1" , b="2" } -2') == Sample("up", {"a": "1", "b": "2"}, -2.0)
    # Prometheus 3 quoted names
    assert parse_sample_line('{"my.metric", "a.b"="x"} 3') == Sample("my.metric", {"a.b": "x"}, 3.0)
    # an OpenMetrics exemplar after the value
    assert parse_sample_line('c_total 5 # {trace_id="abc"} 1.0').value == 5.0
    # a value containing a Unicode line separator is one line
    (sample,) = parse_exposition('up{x="a\u2028b"} 1\n')
    assert sample.labels["x"] == "a\u2028b"
    assert parse_exposition("\r\n# only comments\r\n") == ()


def test_fast_path_agrees_with_the_careful_parser() -> None:
    lines = [
        'latency_between_nodes{from="a",to="b"} 0.436',
        'monlat_probes_total{from="a",result="reply",to="b",} 12 1712345678000',
        'x{a="1",b="two words"} NaN',
        "x{} +Inf",
    ]
    for line in lines:
        (fast,) = parse_exposition(line)
        careful = parse_sample_line(line)
        assert (fast.name, fast.labels) == (careful.name, careful.labels)
        assert fast.value == careful.value or (math.isnan(fast.value) and math.isnan(careful.value))


def test_keep_filters_by_name_and_skips_checking_the_rest() -> None:
    text = 'wanted{a="1"} 1\nunwanted{broken 2\n{"wanted"} 3\n{"other"} 4\n'
    samples = parse_exposition(text, keep=lambda name: name == "wanted")
    assert [(s.name, s.value) for s in samples] == [("wanted", 1.0), ("wanted", 3.0)]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('up{a="1" 1', "expected ',' or '}'"),
        ('up{a="1', "unterminated"),
        ("up{a=1} 1", "quoted value"),
        ('up{a="1",a="2"} 1', "duplicate label 'a'"),
        ('up{1a="x"} 1', "invalid label name"),
        ("up one", "invalid value 'one'"),
        ("up 1_000", "invalid value"),
        ("up", "expected a value"),
        ("up 1 2 3", "expected a value"),
        ("up 1 soon", "invalid timestamp"),
        ("{} 1", "expected a metric name"),
        ('up{"other"} 1', "metric name given twice"),
    ],
)
def test_parse_errors_name_the_line(line: str, words: str) -> None:
    with pytest.raises(ExpositionError) as caught:
        parse_exposition(f"# TYPE up gauge\nok 1\n{line}\n")
    assert str(caught.value).startswith("line 3: ")
    assert words in str(caught.value)


# --- the matrix ----------------------------------------------------------------------------------


def test_build_matrix_from_collector_output() -> None:
    text = exposition(
        {
            ("node1", "node2"): PairData(0.5, 0.0, 0.02),
            ("node2", "node1"): PairData(None, 1.0),
            ("node10", "node2"): PairData(0.7, 0.25),
        },
        extra='monlat_agent_info{from="node3",version="0.1.0",socket="raw"} 1\n'
        'monlat_expected_probers{to="node1"} 2\n'
        'latency_between_nodes{from="node1",to="node10"} NaN\n'
        'process_cpu_seconds_total{from="x",to="y"} 3\n',
    )
    matrix = build_matrix(parse_exposition(text))
    assert matrix.nodes == ("node1", "node2", "node3", "node10")  # natural order, agent_info too
    assert matrix.cell("node1", "node2") == Cell(0.5, 0.0, 0.02, 60.0)
    lost = matrix.cell("node2", "node1")
    assert lost is not None and lost.lost and lost.probes == 60.0
    assert matrix.cell("node10", "node2") == Cell(0.7, 0.25, 0.01, 60.0)
    assert matrix.cell("node1", "node10") == Cell()  # NaN latency: a pair without data
    assert matrix.cell("x", "y") is None
    assert matrix.expected_probers == {"node1": 2}
    assert not matrix.has_zones


def test_build_matrix_zones_and_duplicates() -> None:
    zones = {"a1": "zone-a", "b1": "zone-b", "a2": "zone-a"}
    pairs = {("b1", "a1"): PairData(1.0), ("a1", "b1"): PairData(1.0), ("a2", "a1"): PairData()}
    text = exposition(pairs, zones=zones) + 'latency_between_nodes{from="a1",to="b1"} 2.5\n'
    matrix = build_matrix(parse_exposition(text))
    assert matrix.zones == zones
    assert matrix.cell("a1", "b1") == Cell(2.5, 0.0, 0.01, 60.0)  # the last series wins
    assert order_nodes(matrix, "zone") == ("a1", "a2", "b1")
    assert order_nodes(matrix, "name") == ("a1", "a2", "b1")
    unzoned = build_matrix(parse_exposition(exposition(pairs, zones={"b1": "zone-b"})))
    assert unzoned.zones == {"b1": "zone-b"}  # empty zone labels are no zone
    assert order_nodes(unzoned, "zone") == ("b1", "a1", "a2")  # zoned first, then the rest


def test_views_keep_host_and_pod_paths_and_families_apart() -> None:
    """Host agents, pod-network agents (network="pod") and dual-stack series in one exposition:
    each view is one matrix, never a mix where the last series would win."""
    text = (
        'latency_between_nodes{from="a",to="b"} 0.4\n'
        'latency_between_nodes{from="a",to="b",network="pod"} 0.9\n'
        'latency_between_nodes{from="a",to="c",family="ipv4"} 0.5\n'
        'latency_between_nodes{from="a",to="c",family="ipv6"} 0.6\n'
        'latency_between_nodes{from="a",to="c",family="ipv6",network="pod"} 1.1\n'
        'monlat_agent_info{from="d",network="pod",version="0.1.0",socket="dgram"} 1\n'
    )
    samples = parse_exposition(text)
    host = build_matrix(samples)
    assert host.cell("a", "b") == Cell(0.4) and host.cell("a", "c") == Cell(0.5)
    assert "d" not in host.nodes
    assert build_matrix(samples, View(family="ipv6")).cell("a", "c") == Cell(0.6)
    pod = build_matrix(samples, View(network="pod"))
    assert pod.cell("a", "b") == Cell(0.9) and pod.cell("a", "c") is None
    assert pod.nodes == ("a", "b", "d")
    assert build_matrix(samples, View("pod", "ipv6")).cell("a", "c") == Cell(1.1)


def test_view_options_are_checked() -> None:
    options = parse_matrix_args(
        ["--url", "http://x:9090", "--network", "pod", "--family", "IPv6"], {}
    )
    assert options.view == View("pod", "ipv6")
    with pytest.raises(ConfigError, match="--family: expected ipv4 or ipv6"):
        parse_matrix_args(["--url", "http://x:9090", "--family", "v6"], {})
    with pytest.raises(ConfigError, match="--network: invalid"):
        parse_matrix_args(["--url", "http://x:9090", "--network", "pod net"], {})


def test_median_excluding_matches_brute_force() -> None:
    rng = random.Random(3)
    for _ in range(300):
        values = sorted(rng.choice([0.1, 0.2, 0.3, 1.0, 5.0]) for _ in range(rng.randint(1, 12)))
        removed = sorted(rng.sample(values, rng.randint(0, len(values))))
        left = list(values)
        for value in removed:
            left.remove(value)
        expected = None
        if left:
            middle = len(left) // 2
            expected = left[middle] if len(left) % 2 else (left[middle - 1] + left[middle]) / 2
        assert median_excluding(values, removed) == expected


def test_natural_key_and_abbreviation() -> None:
    assert sorted(["n10", "n9", "N1", "10.0.0.2", "n1", "n", "lo2", "lo"], key=natural_key) == [
        "10.0.0.2",
        "lo",
        "lo2",
        "n",
        "N1",
        "n1",
        "n9",
        "n10",
    ]
    names = ["ip-10-0-1-2.eu-west-1.compute.internal", "ip-10-0-1-3.eu-west-1.compute.internal"]
    assert abbreviate(names) == (("ip-10-0-1-2", "ip-10-0-1-3"), ".eu-west-1.compute.internal")
    assert abbreviate(["a.x.internal", "b.y.internal"]) == (("a.x", "b.y"), ".internal")
    assert abbreviate(["10.0.0.1", "10.0.1.1"]) == (("10.0.0.1", "10.0.1.1"), "")


# --- the table -----------------------------------------------------------------------------------


def sample_matrix() -> Matrix:
    nodes = ["n1", "n2", "n3", "n4"]
    pairs = full_mesh(nodes)
    pairs[("n1", "n2")] = PairData(4.0)  # 10x the median: red
    pairs[("n1", "n3")] = PairData(None, 1.0)  # LOST
    pairs[("n2", "n3")] = PairData(0.4, 0.12)  # 12 % loss
    pairs[("n3", "n1")] = PairData(None, 0.5)  # no RTT this interval, 50 % loss
    pairs[("n4", "n1")] = PairData(None, 0.0)  # no RTT, no loss yet
    del pairs[("n2", "n4")]  # no data at all
    return build_matrix(parse_exposition(exposition(pairs)))


def table_rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:6]}


def test_table_without_colour_marks_everything_in_text() -> None:
    matrix = sample_matrix()
    text = render_table(matrix, matrix.nodes, TableStyle(colors=0))
    assert ESC not in text
    lines = text.splitlines()
    assert lines[0].startswith("4 nodes, 8 pairs with an RTT, median 0.")
    assert lines[1].split() == ["n1", "n2", "n3", "n4"]
    rows = table_rows(text)
    assert rows["n1"] == ["\\", "4.00", "LOST", rows["n1"][3]]
    assert rows["n2"][2:] == ["12%", "·"]
    assert rows["n3"][0] == "50%"
    assert rows["n4"][0] == "?"
    assert [rows[n][i] for i, n in enumerate(["n1", "n2", "n3", "n4"])] == ["\\"] * 4
    assert "LOST no reply" in text and "· no data" in text and "colour:" not in text
    # columns line up: every row as long as the header
    assert len({len(line) for line in lines[1:6]}) == 1


def test_table_in_256_and_16_colours() -> None:
    matrix = sample_matrix()
    text = render_table(matrix, matrix.nodes, TableStyle(colors=256))
    n1 = text.splitlines()[2]
    assert f"{ESC}38;5;196m4.00{ESC}0m" in n1  # 10x the median: red end of the gradient
    assert f"{ESC}1;97;41mLOST{ESC}0m" in n1
    assert f"{ESC}38;5;244m\\{ESC}0m" in n1
    assert f"{ESC}1;38;5;196m12%{ESC}0m" in text
    assert f"{ESC}38;5;46m" in text  # ordinary pairs are green
    assert "colour: RTT / median" in text
    sixteen = render_table(matrix, matrix.nodes, TableStyle(colors=16))
    assert f"{ESC}31m4.00" in sixteen and f"{ESC}32m" in sixteen and "38;5" not in sixteen
    # colour codes do not disturb the alignment
    plain = render_table(matrix, matrix.nodes, TableStyle(colors=0))
    strip = __import__("re").compile(r"\x1b\[[0-9;]*m")
    assert strip.sub("", text).splitlines()[:6] == plain.splitlines()[:6]


def test_wide_cluster_numbers_columns_and_strips_the_domain() -> None:
    nodes = [f"ip-10-0-{i}-1.eu-west-1.compute.internal" for i in range(1, 13)]
    zones = {node: "eu-west-1a" if i < 6 else "eu-west-1b" for i, node in enumerate(nodes)}
    pairs = full_mesh(nodes)
    matrix = build_matrix(parse_exposition(exposition(pairs, zones=zones)))
    ordered = order_nodes(matrix, "zone")
    text = render_table(matrix, ordered, TableStyle(colors=0, width=60))
    lines = text.splitlines()
    header = lines[1]
    assert header.split()[:4] == ["from", "\\", "to", "zone"]
    assert header.split()[4:10] == ["1", "2", "3", "4", "5", "6"]
    assert " | " in header  # the zone boundary between columns 6 and 7
    assert lines[2].split()[:3] == ["1", "ip-10-0-1-1", "eu-west-1a"]
    assert "columns are numbered as the rows" in text
    assert "common suffix .eu-west-1.compute.internal" in text
    assert "the table is" in text and "terminal 60" in text
    assert ".compute.internal" not in "\n".join(lines[1:14])


def test_colour_depth() -> None:
    tty = {"TERM": "xterm-256color"}
    assert color_depth(no_color=False, isatty=True, environ=tty) == 256
    assert color_depth(no_color=False, isatty=True, environ={"TERM": "xterm"}) == 16
    assert color_depth(no_color=False, isatty=True, environ={"COLORTERM": "truecolor"}) == 256
    assert color_depth(no_color=True, isatty=True, environ=tty) == 0
    assert color_depth(no_color=False, isatty=False, environ=tty) == 0
    assert color_depth(no_color=False, isatty=True, environ={**tty, "NO_COLOR": "1"}) == 0
    assert color_depth(no_color=False, isatty=True, environ={"TERM": "dumb"}) == 0


# --- csv and json --------------------------------------------------------------------------------


def test_csv_has_one_row_per_ordered_pair() -> None:
    matrix = sample_matrix()
    rows = list(csv.DictReader(io.StringIO(render_csv(matrix, matrix.nodes))))
    assert list(rows[0]) == [
        "from",
        "to",
        "from_zone",
        "to_zone",
        "latency_ms",
        "loss_ratio",
        "jitter_ms",
        "probes",
    ]
    assert len(rows) == 4 * 3
    by_pair = {(r["from"], r["to"]): r for r in rows}
    assert by_pair[("n1", "n2")]["latency_ms"] == "4.0"
    assert (
        by_pair[("n1", "n3")]["latency_ms"] == "" and by_pair[("n1", "n3")]["loss_ratio"] == "1.0"
    )
    assert set(by_pair[("n2", "n4")].values()) == {"n2", "n4", ""}  # missing: empty fields
    assert by_pair[("n2", "n3")]["jitter_ms"] == "0.01"


def test_json_shape() -> None:
    matrix = sample_matrix()
    document = json.loads(render_json(matrix, matrix.nodes))
    assert set(document) == {"nodes", "zones", "cells"}
    assert document["nodes"] == ["n1", "n2", "n3", "n4"]
    assert document["cells"]["n1"]["n2"] == {
        "latency_ms": 4.0,
        "loss_ratio": 0.0,
        "jitter_ms": 0.01,
        "probes": 60.0,
    }
    assert document["cells"]["n1"]["n3"]["latency_ms"] is None
    assert "n4" not in document["cells"]["n2"]  # no data: absent
    assert "n1" not in document["cells"]["n1"]


# --- watching ------------------------------------------------------------------------------------


def test_watch_loop_with_injected_sleep() -> None:
    out = io.StringIO()
    sleeps: list[float] = []
    frames = iter(["one\n", "two\n", "three\n", "four\n"])
    watch(frames, 2.0, out, clear=True, sleep=sleeps.append, iterations=3)
    assert out.getvalue() == f"{CLEAR_SCREEN}one\n{CLEAR_SCREEN}two\n{CLEAR_SCREEN}three\n"
    assert sleeps == [2.0, 2.0]
    out = io.StringIO()
    watch(iter(["a\n", "b\n", "c\n"]), 1.0, out, clear=False, sleep=sleeps.append, iterations=2)
    assert out.getvalue() == "a\n\nb\n"  # not a terminal: frames one after the other


def test_watch_frames_refresh_and_survive_a_failed_fetch() -> None:
    matrix = sample_matrix()
    results: list[Matrix | ConfigError] = [ConfigError("--url", "connection refused"), matrix]

    def load() -> Matrix:
        result = results.pop(0)
        if isinstance(result, ConfigError):
            raise result
        return result

    frames = watch_frames(matrix, load, lambda m: f"{len(m.nodes)} nodes\n", lambda: "@ ")
    assert [next(frames) for _ in range(3)] == [
        "@ 4 nodes\n",
        "@ cannot refresh: connection refused (retrying)\n",
        "@ 4 nodes\n",
    ]


class _InterruptingOut(io.StringIO):
    """Ctrl-C arrives while the second frame is written."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def write(self, text: str) -> int:
        if "every" in text:
            self.frames += 1
            if self.frames == 2:
                raise KeyboardInterrupt
        return super().write(text)


@pytest.mark.timeout(30)
def test_watch_ends_quietly_on_ctrl_c() -> None:
    out = _InterruptingOut()
    with serve_text(exposition(full_mesh(["a", "b"]))) as url:
        status = run_matrix(["--url", url, "--watch", "0.5"], {}, out)
    assert status == 0
    assert out.frames == 2
    assert "2 nodes" in out.getvalue()


# `python -m monlat ...`, except that SIGINT raises KeyboardInterrupt as under a terminal even when
# the test runs in a background job (where the shell starts children with SIGINT ignored).
_UNDER_A_TERMINALS_SIGINT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'monlat'; runpy.run_module('monlat', run_name='__main__', alter_sys=True)"
)


@pytest.mark.timeout(30)
def test_watch_cli_exits_0_on_sigint() -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    with serve_text(exposition(full_mesh(["a", "b"]))) as url:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _UNDER_A_TERMINALS_SIGINT,
                "matrix",
                "--url",
                url,
                "--watch",
                "0.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("every 0.5s: ")
        time.sleep(0.7)  # at least one refresh
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "Traceback" not in err and err == ""
    assert (first + out).count("every 0.5s") >= 2


# --- options, fetching and the command line ------------------------------------------------------


def test_options() -> None:
    options = parse_matrix_args(["--url", "http://monlat.monlat.svc:9090"], {})
    assert options.url == "http://monlat.monlat.svc:9090/metrics"
    assert (options.format, options.sort, options.watch_s, options.no_color) == (
        "table",
        "zone",
        None,
        False,
    )
    from_env = parse_matrix_args(["--format", "JSON"], {"MONLAT_URL": "https://c:1/m?x=1"})
    assert (from_env.setting, from_env.url, from_env.format) == (
        "MONLAT_URL",
        "https://c:1/m?x=1",
        "json",
    )
    assert parse_matrix_args(["--url", "http://h/", "--watch", "2"], {}).watch_s == 2.0
    assert parse_matrix_args(["--url", "http://h", "--watch", "500ms"], {}).watch_s == 0.5


@pytest.mark.parametrize(
    ("argv", "env", "setting", "words"),
    [
        ([], {}, "--url", "required"),
        (["--url", "monlat:9090"], {}, "--url", "expected an http:// or https:// URL"),
        (["--url", "ftp://h/metrics"], {}, "--url", "got 'ftp://h/metrics'"),
        (["--url", "http://h:99999/"], {}, "--url", "invalid port"),
        ([], {"MONLAT_URL": "h:1"}, "MONLAT_URL", "expected an http"),
        (["--url", "http://h", "--format", "xml"], {}, "--format", "expected table, csv or json"),
        (["--url", "http://h", "--sort", "size"], {}, "--sort", "expected zone or name"),
        (["--url", "http://h", "--watch", "soon"], {}, "--watch", "invalid duration"),
        (["--url", "http://h", "--watch", "0.1"], {}, "--watch", "at least 0.5s"),
        (["--url", "http://h", "--format", "csv", "--watch", "1"], {}, "--watch", "only with"),
        (["--url", "http://h", "--colour"], {}, "arguments", "unrecognized arguments"),
    ],
)
def test_bad_options(argv: list[str], env: dict[str, str], setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_matrix_args(argv, env)
    assert caught.value.setting == setting
    assert words in caught.value.problem


def test_parse_url() -> None:
    assert parse_url("--url", "http://h:9090/") == "http://h:9090/metrics"
    assert parse_url("--url", " https://h/federate?match=x ") == "https://h/federate?match=x"


def test_fetch_errors_are_one_config_error() -> None:
    body = gzip.compress(exposition(full_mesh(["a", "b"])).encode())
    routes = {
        "/gz": (200, body, {"Content-Encoding": "gzip"}),
        "/bad": (200, b"latency_between_nodes{oops 1\n", {}),
        "/other": (200, b"# TYPE up gauge\nup 1\n", {}),
        "/fail": (500, b"boom", {}),
    }
    with serve(routes) as base:
        assert "latency_between_nodes" in fetch_text("--url", base + "/gz")
        assert load_matrix("--url", base + "/gz").nodes == ("a", "b")
        cases = {
            "/bad": "not a Prometheus text exposition: line 1:",
            "/other": "no monlat metrics there",
            "/fail": "HTTP 500",
            "/nope": "HTTP 404",
        }
        for path, words in cases.items():
            with pytest.raises(ConfigError) as caught:
                load_matrix("--url", base + path)
            assert words in caught.value.problem, path
    with pytest.raises(ConfigError) as refused:
        load_matrix("--url", f"http://127.0.0.1:{closed_port()}/metrics", timeout_s=2)
    assert "connection refused" in refused.value.problem


def test_cli_csv_end_to_end() -> None:
    with serve_text(exposition(full_mesh(["node1", "node2", "node3"]))) as url:
        result = run_monlat("matrix", "--url", url, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6 and {r["from"] for r in rows} == {"node1", "node2", "node3"}


def test_cli_table_end_to_end_no_colour_when_piped() -> None:
    pairs = full_mesh(["node1", "node2"])
    pairs[("node1", "node2")] = PairData(None, 1.0)
    with serve_text(exposition(pairs)) as url:
        result = run_monlat("matrix", "--url", url, env={"TERM": "xterm-256color"})
    assert result.returncode == 0, result.stderr
    assert ESC not in result.stdout
    assert table_rows(result.stdout)["node1"] == ["\\", "LOST"]


@pytest.mark.parametrize(
    ("args", "setting", "words"),
    [
        (["--url", "ftp://example.com/metrics"], "--url", "expected an http:// or https:// URL"),
        (["--url", "http://127.0.0.1:{port}/metrics"], "--url", "connection refused"),
        (["--url", "http://127.0.0.1:{port}", "--format", "xml"], "--format", "expected table"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(args: list[str], setting: str, words: str) -> None:
    port = closed_port()
    result = run_monlat("matrix", *(a.format(port=port) for a in args))
    assert_one_line_error(result, setting, words)
    assert result.stdout == ""


def test_cli_help_and_unknown_command() -> None:
    assert run_monlat("matrix", "--help").returncode == 0
    top = run_monlat("--help")
    assert top.returncode == 0 and "matrix" in top.stdout and "diagnose" in top.stdout
    unknown = run_monlat("matrx")
    assert unknown.returncode == 2 and "agent|matrix|diagnose" in unknown.stderr
