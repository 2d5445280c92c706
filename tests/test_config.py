"""A bad configuration is refused with file, line and field; secrets resolve from env: and file:."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config

BASE = '[shop]\nname = "x"\ntimezone = "Asia/Shanghai"\n'


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "shop.toml")
    return info.value


def test_unknown_key_is_an_error_with_its_line() -> None:
    e = error(BASE + "colour = \"red\"\n")
    assert e.field == "shop.colour" and e.line == 4 and "unknown key" in e.message


def test_rule_parameter_errors_name_the_rule_key() -> None:
    e = error(BASE + "\n[rules.DUP-001]\nwindow = \"soon\"\n")
    assert e.field == "rules.DUP-001.window" and e.line == 6


def test_unknown_rule_is_refused() -> None:
    e = error(BASE + "\n[rules.DUP-999]\nwindow = \"1m\"\n")
    assert "unknown rule" in e.message


def test_unknown_time_zone_is_refused() -> None:
    e = error('[shop]\ntimezone = "Mars/Olympus"\n')
    assert e.field == "shop.timezone" and e.line == 2


def test_a_source_needs_exactly_one_input() -> None:
    e = error(BASE + '\n[[source]]\nname = "t"\nprotocol = "zvt"\n')
    assert e.field.startswith("source[0] (t)") and "exactly one of" in e.message


def test_money_in_config_must_not_be_a_float() -> None:
    e = error(BASE + "\n[rules.AMT-003]\nceiling = 5000.5\n")
    assert e.field == "rules.AMT-003.ceiling"


def test_secrets_come_from_env_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
    monkeypatch.setenv("SG_TEST_KEY", "abc-123-key")
    loaded = parse_config(BASE + f'''
[[channel]]
name = "robot"
type = "wecom"
key = "env:SG_TEST_KEY"

[[channel]]
name = "hq"
type = "webhook"
url = "http://127.0.0.1:9/x"
secret = "file:{secret_file}"
''')
    # Read when the channel is built to send (resolved()), not at load: replay and check-config need none.
    robot, hq = (c.resolved() for c in loaded.config.channel)
    assert robot.key is not None and robot.key.get_secret_value() == "abc-123-key"
    assert hq.secret is not None and hq.secret.get_secret_value() == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert "abc-123-key" not in f"{robot!r} {robot} {robot.model_dump_json()}"


def test_a_missing_secret_is_a_configuration_error_when_the_channel_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.delivery.channels.factory import build_channels

    monkeypatch.delenv("SG_MISSING", raising=False)
    loaded = parse_config(BASE + '\n[[channel]]\nname = "robot"\ntype = "wecom"\nkey = "env:SG_MISSING"\n')
    with pytest.raises(ConfigError) as info:
        build_channels(loaded.config)   # what run (preflight) does at start-up: exit 78
    e = info.value
    assert "SG_MISSING" in e.message and e.field.startswith("channel[0]")


def test_a_missing_file_is_reported_plainly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "file not found" in str(info.value)


def test_toml_syntax_errors_carry_the_line() -> None:
    e = error(BASE + "[rules\n")
    assert e.line == 4 and "not valid TOML" in e.message


def test_fallback_channels_only_receive_what_an_earlier_channel_missed() -> None:
    from agent.delivery.channels.factory import build_channels, routing

    loaded = parse_config(BASE + '''
[[channel]]
name = "robot"
type = "wecom"
key = "k-123456"

[[channel]]
name = "hq"
type = "webhook"
url = "http://127.0.0.1:9/x"

[[channel]]
name = "backup"
type = "dingtalk"
key = "t-123456"
fallback = true
''')
    channels = build_channels(loaded.config)
    assert [c.name for c in channels] == ["robot", "hq", "backup"]  # delivery knows all, in fallback order
    assert routing(loaded.config, channels) == (["robot", "hq"], ["robot"])
