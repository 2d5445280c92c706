"""[[channel]] type = "nats": what the config accepts, refuses (file, line, field), and keeps secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, NatsChannelConfig, parse_config, unresolved_secrets
from agent.delivery.channels import make_channel
from agent.delivery.channels.nats import NatsChannel
from agent.service.reload import config_secrets
from tests.helpers import BASE_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def channel(body: str) -> str:
    return BASE_CONFIG + f'\n[[channel]]\nname = "hq"\ntype = "nats"\n{body}\n'


def refused(body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(channel(body), "shop.toml")
    return info.value


def test_one_url_or_a_list_each_with_its_port() -> None:
    one = parse_config(channel('url = "nats://127.0.0.1"'), "t").config.channel[0]
    assert isinstance(one, NatsChannelConfig)
    assert [s.get_secret_value() for s in one.servers] == ["nats://127.0.0.1:4222"]
    many = parse_config(channel('url = ["nats://a:4333", "tls://u:pw@b"]'), "t").config.channel[0]
    assert [s.get_secret_value() for s in many.servers] == ["nats://a:4333", "tls://u:pw@b:4222"]
    assert many.url.get_secret_value() == "nats://a:4333"     # what doctor checks answers
    assert (many.stream, many.create_stream, many.events) == ("SETTLEGUARD", False, False)
    assert many.duplicate_window.total_seconds() == 3600


def test_refusals_name_the_field_and_line_and_never_echo_a_url() -> None:
    e = refused('url = "http://u:hunter2@x"')
    assert e.field == "channel[0] (hq).url" and e.line is not None and "nats://" in e.message
    assert "hunter2" not in str(e)
    assert "stream" in refused('url = "nats://x"\nstream = "a.b"').field
    assert "go together" in refused('url = "nats://x"\nuser = "a"').message
    assert "one way" in refused('url = "nats://x"\ntoken = "t"\ncreds = "/x.creds"').message
    assert "max_age" in refused('url = "nats://x"\nmax_age = "10m"').message   # window 1h > 10m
    assert refused('url = "nats://x"\nkey = "k"').message.startswith("unknown key")
    assert refused("").field.endswith(".url")


def test_credentials_are_secrets_read_when_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = parse_config(channel('url = "nats://till:pw-in-url@127.0.0.1"\nuser = "till"\n'
                                  'password = "env:SG_NATS_PW"'), "t")
    (where, problem, _fix), = unresolved_secrets(loaded.config)
    assert where == "channel[0] (hq).password" and "SG_NATS_PW" in problem
    monkeypatch.setenv("SG_NATS_PW", "pw-from-env")
    built = make_channel(loaded.config.channel[0])
    assert isinstance(built, NatsChannel) and built.auth.password == "pw-from-env"
    hidden = config_secrets(loaded)
    assert "pw-from-env" in hidden and any("pw-in-url" in s for s in hidden)   # the log redactor hides both
    assert "pw-from-env" not in repr(loaded.config) and "pw-in-url" not in repr(loaded.config)


def test_a_missing_creds_or_tls_file_is_a_configuration_error(tmp_path: Path) -> None:
    loaded = parse_config(channel(f'url = "nats://x"\ncreds = "{tmp_path}/none.creds"'), "t")
    with pytest.raises(ValueError, match="creds file"):
        make_channel(loaded.config.channel[0])
    loaded = parse_config(channel(f'url = "tls://x"\ntls_ca = "{tmp_path}/none.pem"'), "t")
    with pytest.raises(ValueError, match="TLS files"):
        make_channel(loaded.config.channel[0])


def test_the_example_config_carries_a_nats_channel() -> None:
    loaded = parse_config((ROOT / "config" / "settleguard.example.toml").read_text(encoding="utf-8"), "example")
    assert any(c.type == "nats" for c in loaded.config.channel)


def test_a_nats_channel_carries_heartbeats_on_the_chain_schedule() -> None:
    from agent.schedule import heartbeat_intervals

    loaded = parse_config(channel('url = "nats://x"\nheartbeat = "5m"'), "t")
    assert heartbeat_intervals(loaded) == {"hq": __import__("datetime").timedelta(minutes=5)}
    assert "heartbeat" in refused('url = "nats://x"\nheartbeat = "1s"').field
