"""`make demo` prints the till page's address; `demo --keep DIR` keeps serving it after the day, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.sim.demo import DEMO_PINS
from tests.web_support import WebClient, kept_demo


def test_demo_keep_serves_the_days_alerts_on_the_page_until_ctrl_c(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def look(host: str, port: int) -> None:
        c = WebClient(host, port)
        seen["page"] = c.get("/").status
        seen["login"] = c.login(DEMO_PINS["李店长"][1]).status
        seen["open"] = c.get("/api/alerts?state=open").body["alerts"]
        seen["closed"] = c.get("/api/alerts?state=closed").body["alerts"]
        seen["batch"] = c.get("/api/batch").body

    status, printed = kept_demo(tmp_path / "state", while_serving=look)
    assert status == 0, printed
    assert "till page: http://127.0.0.1:" in printed and "PIN 8888" in printed
    assert seen["page"] == 200 and seen["login"] == 200
    rules = {a["rule"] for a in seen["open"] + seen["closed"]}
    # The demo day: a double charge voided on the terminal, a decimal slip escalated at the 23:00 cutoff.
    assert "DUP-001" in rules and "AMT-001" in rules
    assert any(a["rule"] == "DUP-001" and a["view"]["state_zh"] == "已撤销" for a in seen["closed"])
    assert any(a["state"] == "escalated" and a["view"]["has_evidence"] for a in seen["open"])
    assert seen["batch"]["sources"][0]["name"] == "terminal"
    assert "stopped" in printed
