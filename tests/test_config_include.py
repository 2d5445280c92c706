"""``include``: a chain's defaults in one shared file, each till's overrides in its own (issue 19)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agent.cli import main as cli_main
from agent.config import ConfigError, load_config
from agent.service.daemon import Daemon
from tests.helpers import wait_until

CHAIN = """\
# chain defaults, shipped to every till
[shop]
name = "好味道餐饮"
timezone = "Asia/Shanghai"
currency = "CNY"

[settlement]
cutoff = "23:00"
review_times = ["15:00"]

[[channel]]
name = "head-office"
type = "webhook"
url = "https://hq.example.com/settleguard"

[[source]]
name = "chain-default-terminal"
protocol = "jsonl"
file = "/dev/null"

[rules.DUP-001]
window = "10m"
"""

TILL = """\
include = ["{include}"]

[shop]
name = "好味道餐饮 静安店"
id = "haowei-jingan"
till_id = "till-1"

[settlement]
cutoff = "22:30"

[[source]]
name = "terminal"
protocol = "jsonl"
file = "/dev/null"
"""


def layout(tmp_path: Path, till: str = TILL, chain: str = CHAIN, include: str = "chain.toml") -> Path:
    (tmp_path / "chain.toml").write_text(chain, encoding="utf-8")
    path = tmp_path / "till" / "settleguard.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(till.format(include=include), encoding="utf-8")
    return path


def test_tables_merge_deeply_and_the_including_file_wins(tmp_path: Path) -> None:
    loaded = load_config(layout(tmp_path, include="../chain.toml"))   # relative to the including file
    cfg = loaded.config
    assert (cfg.shop.name, cfg.shop.shop_id, cfg.shop.till_slug) == ("好味道餐饮 静安店", "haowei-jingan", "till-1")
    assert cfg.shop.timezone == "Asia/Shanghai" and cfg.shop.currency == "CNY"    # the chain's, kept
    assert cfg.settlement.cutoff == "22:30" and cfg.settlement.review_times == ["15:00"]
    assert [c.name for c in cfg.channel] == ["head-office"]                        # only the chain has one
    assert loaded.rule_params["DUP-001"].window == timedelta(minutes=10)
    assert loaded.files == [str(tmp_path / "till" / "../chain.toml")]


def test_an_array_of_tables_in_the_including_file_replaces_the_included_one(tmp_path: Path) -> None:
    cfg = load_config(layout(tmp_path, include=str(tmp_path / "chain.toml"))).config
    assert [s.name for s in cfg.source] == ["terminal"], "the till's [[source]] list, not chain + till"


def test_an_error_in_the_included_file_names_that_file_and_line(tmp_path: Path) -> None:
    bad = CHAIN.replace('cutoff = "23:00"', 'cutoff = "25:00"')
    till = TILL.replace('[settlement]\ncutoff = "22:30"\n', "")
    with pytest.raises(ConfigError) as err:
        load_config(layout(tmp_path, till=till, chain=bad, include="../chain.toml"))
    assert err.value.file == str(tmp_path / "till" / "../chain.toml")
    assert (err.value.line, err.value.field) == (8, "settlement.cutoff")


def test_an_error_in_the_including_file_names_it(tmp_path: Path) -> None:
    till = TILL.replace('cutoff = "22:30"', 'cutof = "22:30"')
    path = layout(tmp_path, till=till, include="../chain.toml")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 9, "settlement.cutof")


def test_a_rule_error_in_the_included_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(layout(tmp_path, chain=CHAIN.replace('window = "10m"', 'window = "soon"'),
                           include="../chain.toml"))
    assert err.value.file.endswith("chain.toml") and err.value.line == 22
    assert err.value.field.startswith("rules.DUP-001")


def test_a_toml_error_in_the_included_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(layout(tmp_path, chain=CHAIN + "broken = \n", include="../chain.toml"))
    assert err.value.file.endswith("chain.toml") and "not valid TOML" in err.value.message
    assert err.value.line == 23


def test_a_missing_included_file_is_refused_at_the_include_line(tmp_path: Path) -> None:
    path = layout(tmp_path, include="nowhere.toml")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 1, "include")
    assert "nowhere.toml: file not found" in err.value.message


def test_an_include_cycle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('include = "b.toml"\n[shop]\nname = "a"\n', encoding="utf-8")
    (tmp_path / "b.toml").write_text('include = ["a.toml"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "a.toml")
    assert err.value.file == str(tmp_path / "b.toml") and err.value.field == "include"
    assert "include cycle:" in err.value.message and err.value.message.count("a.toml") == 2


@pytest.mark.parametrize("value", ["3", '[""]', "[1, 2]"])
def test_include_must_name_files(tmp_path: Path, value: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f"include = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == "include" and "must be a file name or a list" in err.value.message


def test_check_config_accepts_a_chain_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check-config", str(layout(tmp_path, include="../chain.toml"))]) == 0
    assert "event source settleguard://haowei-jingan/till-1" in capsys.readouterr().out


def test_the_daemon_reloads_when_an_included_file_changes(tmp_path: Path) -> None:
    chain_dir = tmp_path / "chain"
    chain_dir.mkdir()
    chain = chain_dir / "chain.toml"
    chain.write_text('[shop]\ntimezone = "Asia/Shanghai"\n[settlement]\ncutoff = "23:00"\n', encoding="utf-8")
    path = tmp_path / "etc" / "settleguard.toml"
    path.parent.mkdir()
    path.write_text(f'include = "{chain}"\n[shop]\nname = "店"\n', encoding="utf-8")
    daemon = Daemon(load_config(path), tmp_path / "state", use_scheduler=False, reload_debounce=0.1)
    daemon.start()
    try:
        assert daemon.watcher is not None and daemon.watcher.active
        chain.write_text('[shop]\ntimezone = "Asia/Shanghai"\n[settlement]\ncutoff = "22:00"\n', encoding="utf-8")
        wait_until(lambda: daemon.reloads == 1, "a reload after the included file changed")
        assert daemon.loaded.config.settlement.cutoff == "22:00"
    finally:
        daemon.stop()
