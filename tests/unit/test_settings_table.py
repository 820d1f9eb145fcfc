"""The agent's settings are one table: a row per flag with its variable, default and parser."""

from __future__ import annotations

import pytest

from monlat.agent.settings import AGENT_FLAGS, build_parser, parse_agent_config


def test_every_default_is_valid_for_its_own_parser() -> None:
    for row in AGENT_FLAGS:
        if row.default is not None:
            row.parse(row.flag, row.default)  # raises ConfigError if the table contradicts itself


def test_help_shows_each_default_and_variable_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "--help"])
    # argparse wraps at spaces and hyphens: compare without whitespace.
    agent_help = "".join(capsys.readouterr().out.split())
    for row in AGENT_FLAGS:
        if row.env:
            assert agent_help.count(f"[env{row.env}]") == 1, row.flag
        if row.default:
            assert f"default{row.default}" in agent_help, row.flag


def test_an_unset_setting_reads_as_its_default() -> None:
    config = parse_agent_config(["--node-name", "a", "--peers", "b=10.0.0.2"], {})
    defaults = {row.flag: row.parse(row.flag, row.default) for row in AGENT_FLAGS if row.default}
    assert config.probe.interval_s == defaults["--interval"]
    assert config.probe.payload_size == defaults["--payload-size"]
    assert config.window_s == defaults["--window"]
    assert config.export_interval_s == defaults["--export-interval"]
    assert config.log_measurements is defaults["--log-measurements"]
