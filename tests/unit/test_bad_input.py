"""Every bad input: one line naming the setting, exit status 2, never a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from monlat.agent.config import DiscoveryMode, SocketMode
from monlat.agent.settings import parse_agent_config
from monlat.common.errors import ConfigError
from tests.support.logfmt import not_logfmt

ENV = {"HOME": "/nonexistent-home"}


def run_monlat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).parents[2])}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "monlat", *args],
        capture_output=True, text=True, timeout=30, env=full_env, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "env", "setting", "words"),
    [
        (["--bogus"], {}, "arguments", "unrecognized arguments: --bogus"),
        (["--interval", "fast"], {}, "--interval", "invalid duration 'fast'"),
        (["--interval", "0s"], {}, "--interval", "greater than zero"),
        ([], {"MONLAT_INTERVAL": "1x"}, "MONLAT_INTERVAL", "invalid duration"),
        (["--timeout=-1s"], {}, "--timeout", "invalid duration"),
        (["--peers", "a=10.0.0.300"], {}, "--peers", "invalid IP address '10.0.0.300'"),
        (["--peers", "a=10.0.0.1,a=10.0.0.2"], {}, "--peers", "listed twice"),
        (["--peers", "bad name=10.0.0.1"], {}, "--peers", "invalid peer name"),
        (["--peers-file", "/nonexistent/peers"], {}, "--peers-file", "cannot read"),
        (["--prometheus", "localhost"], {}, "--prometheus", "expected HOST:PORT"),
        (["--listen", "0.0.0.0:99999"], {}, "--listen", "invalid port"),
        (["--count", "0"], {}, "--count", "whole number from 1 to 100"),
        (["--payload-size", "8"], {}, "--payload-size", "from 16 to 1400"),
        (["--socket", "magic"], {}, "--socket", "expected auto, raw or dgram"),
        (["--exporters", "statsd"], {}, "--exporters", "unknown exporter 'statsd'"),
        (["--log-measurements", "maybe"], {}, "--log-measurements", "expected true or false"),
        (["--window", "10ms"], {}, "--window", "at least one interval"),
        (["--discovery", "consul"], {}, "--discovery", "expected static, kubernetes or pods"),
        (["--peers", "a=10.0.0.1,a=10.0.0.2"], {}, "--peers", "peer 'a' listed twice"),
        (["--peers", "a=10.0.0.1,a=fd00::1"], {}, "--peers", "use --ip-family dual"),
        (
            ["--ip-family", "dual", "--peers", "a=10.0.0.1,a=fd00::1,a=fd00::2"],
            {},
            "--peers",
            "peer 'a' listed twice for IPv6",
        ),
        (["--ip-family", "both"], {}, "--ip-family", "expected ipv4, ipv6, any or dual"),
        (["--zone-labels", "true"], {}, "--zone-labels", "needs --discovery kubernetes"),
        (["--cross-zone-peers", "2"], {}, "--cross-zone-peers", "needs --discovery kubernetes"),
        (
            ["--discovery", "kubernetes", "--node-name", "n1", "--cross-zone-peers", "0"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            "--cross-zone-peers",
            "whole number from 1",
        ),
        (["--network-label", "pod path"], {}, "--network-label", "invalid label value"),
        (
            ["--discovery", "pods", "--node-name", "n1"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            "--pod-namespace",
            "required outside a pod",
        ),
        (
            ["--discovery", "pods", "--node-name", "n1"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "POD_NAMESPACE": "Monlat_"},
            "POD_NAMESPACE",
            "invalid namespace 'Monlat_'",
        ),
        (
            ["--discovery", "pods"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            "--node-name",
            "required with Kubernetes discovery",
        ),
        (["--max-peers", "0"], {}, "--max-peers", "whole number from 1 to 100000"),
        (["--max-peers", "many"], {}, "--max-peers", "expected auto, all or a whole number"),
        (["--pair-histograms", "some"], {}, "--pair-histograms", "expected true or false"),
        (
            ["--cross-zone-peers", "lots"],
            {},
            "--cross-zone-peers",
            "expected auto, off or a whole number",
        ),
        (["--zone-labels", "sometimes"], {}, "--zone-labels", "expected true or false"),
        (
            ["--discovery", "kubernetes", "--node-name", "n1", "--skip-cordoned", "perhaps"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            "--skip-cordoned",
            "expected true or false",
        ),
        (["--otlp-endpoint", "collector:4317"], {}, "--otlp-endpoint", "URL with scheme"),
        (
            ["--exporters", "otlp"],
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317"},
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "URL with scheme",
        ),
        (
            ["--exporters", "otlp"],
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc or http/protobuf",
        ),
        (
            ["--exporters", "otlp"],
            {"OTEL_EXPORTER_OTLP_HEADERS": "novalue"},
            "OTEL_EXPORTER_OTLP_HEADERS",
            "key=value",
        ),
        (
            ["--exporters", "otlp", "--otlp-token-file", "/nonexistent/token"],
            {},
            "--otlp-token-file",
            "/nonexistent/token: No such file or directory",
        ),
        (
            ["--exporters", "otlp"],
            {"MONLAT_OTLP_TOKEN_FILE": "/dev/null"},
            "MONLAT_OTLP_TOKEN_FILE",
            "/dev/null: empty",
        ),
        (
            ["--exporters", "otlp", "--otlp-endpoint", "https://c:4317"],
            {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.crt"},
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "cannot read /nonexistent/ca.crt",
        ),
        (
            ["--exporters", "otlp", "--otlp-token-file", "/proc/self/environ"],
            {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20x"},
            "--otlp-token-file",
            "an authorization header is set as well",
        ),
        (
            ["--discovery", "kubernetes"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            "--node-name",
            "required with Kubernetes discovery",
        ),
        (
            ["--discovery", "kubernetes", "--node-name", "n1", "--kubeconfig", "/nope/config"],
            {},
            "--kubeconfig",
            "kubeconfig /nope/config not found",
        ),
        (
            ["--discovery", "kubernetes", "--node-name", "n1"],
            {},
            "--kubeconfig",
            "no kubeconfig given",
        ),
        (
            ["--discovery", "kubernetes", "--node-name", "n1", "--ip-family", "ipv5"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            "--ip-family",
            "expected ipv4, ipv6, any or dual",
        ),
        (
            ["--discovery", "kubernetes", "--node-name", "n1", "--address-types", "PodIP"],
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
            "--address-types",
            "unknown address type 'PodIP'",
        ),
    ],
)
def test_bad_setting_is_named(
    argv: list[str], env: dict[str, str], setting: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_agent_config(argv, {**ENV, **env})
    assert caught.value.setting == setting
    assert words in str(caught.value)


def test_defaults_outside_kubernetes() -> None:
    config = parse_agent_config(["--peers", "a=10.0.0.2,10.0.0.3"], ENV)
    assert config.discovery is DiscoveryMode.STATIC
    assert config.node_name == socket.gethostname()
    assert [(p.name, p.address) for p in config.static_peers] == [
        ("a", "10.0.0.2"),
        ("10.0.0.3", "10.0.0.3"),
    ]
    assert config.prometheus and config.otlp is None
    assert str(config.listen) == "0.0.0.0:9090"
    assert config.probe.interval_s == 1.0 and config.probe.socket_mode is SocketMode.AUTO


def test_no_peers_means_loopback() -> None:
    config = parse_agent_config([], ENV)
    assert [(p.name, p.address) for p in config.static_peers] == [("localhost", "127.0.0.1")]


def test_exporter_selection_follows_otel_variables() -> None:
    env = {
        **ENV,
        "OTEL_METRICS_EXPORTER": "otlp,prometheus",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example:4318/otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20abc",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_METRIC_EXPORT_INTERVAL": "1500",
    }
    config = parse_agent_config([], env)
    assert config.prometheus
    assert config.otlp is not None
    assert config.otlp.endpoint == "https://otlp.example:4318/otlp/v1/metrics"
    # Lowercased: gRPC refuses an upper-case metadata key at every export (HTTP ignores case).
    assert config.otlp.headers == (("authorization", "Basic abc"),)
    assert config.otlp.timeout_s == 2.5 and not config.otlp.insecure
    assert config.export_interval_s == 1.5
    flags = parse_agent_config(["--exporters", "none", "--otlp-endpoint", "http://c:4317"], env)
    assert not flags.prometheus and flags.otlp is not None
    assert flags.otlp.endpoint == "http://c:4317/v1/metrics"


def test_kubernetes_mode_in_a_pod() -> None:
    config = parse_agent_config([], {**ENV, "KUBERNETES_SERVICE_HOST": "10.96.0.1",
                                     "NODE_NAME": "node1"})  # fmt: skip
    assert config.discovery is DiscoveryMode.KUBERNETES
    assert config.node_name == "node1"
    assert config.otlp is not None and not config.prometheus
    assert config.otlp.endpoint == "http://localhost:4317"


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["agent", "--interval", "soon"], {}, "setting=--interval error=\"invalid duration 'soon'"),
        (["agent", "--nope"], {}, 'setting=arguments error="unrecognized arguments: --nope"'),
        (["agent", "--log-level", "loud"], {}, 'setting=--log-level error="expected debug, info'),
        (
            ["agent", "--discovery", "kubernetes", "--node-name", "n1"],
            {"KUBECONFIG": "/nope"},
            'setting=KUBECONFIG error="kubeconfig /nope not found',
        ),
    ],
)
def test_the_agent_prints_one_logfmt_line_and_exits_2(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    result = run_monlat(*args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert not not_logfmt(result.stderr.splitlines()), result.stderr
    assert " level=error event=config_error " + expected in result.stderr
    assert "Traceback" not in result.stderr


def test_an_operator_command_prints_one_plain_line_and_exits_2() -> None:
    result = run_monlat("frobnicate")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("monlat: error: unknown command 'frobnicate' (try: monlat agent|"), line


def test_unparsable_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("this: [is not, a kubeconfig\n")
    result = run_monlat("agent", "--discovery", "kubernetes", "--node-name", "n1",
                        "--kubeconfig", str(kubeconfig), "--listen", "127.0.0.1:0")  # fmt: skip
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert error_lines == [error_lines[0]]
    assert 'event=config_error setting=--kubeconfig error="cannot load' in error_lines[0]
    assert "Traceback" not in result.stderr


def test_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_monlat("agent", "--peers", "127.0.0.1", "--prometheus", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert (
        f'event=config_error setting=--prometheus error="cannot listen on 127.0.0.1:{port}: '
        in result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr
