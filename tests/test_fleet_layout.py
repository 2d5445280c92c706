"""docs/FLEET.md's chain layout, checked: its nats-server configurations parse (``nats-server -t``), and
run as written (ports and directories aside) a shop's leaf node keeps accepting with head office away and
head office's stream gets every message once when the link is back."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from pathlib import Path

from tests.helpers import wait_until
from tests.nats_support import free_port, nats_binary

DOC = Path(__file__).parent.parent / "docs" / "FLEET.md"


def _blocks() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    shop = re.search(r"The shop's server.*?```\n(.*?)```", text, re.S)
    hq = re.search(r"Head office's server.*?```\n(.*?)```", text, re.S)
    streams = re.findall(r"```json\n(.*?)```", text, re.S)
    assert shop and hq and len(streams) == 2, "docs/FLEET.md lost its configuration examples"
    return {"shop": shop.group(1), "hq": hq.group(1), "shop_stream": streams[0], "hq_stream": streams[1]}


def test_the_documented_configurations_parse(tmp_path: Path) -> None:
    for name in ("shop", "hq"):
        conf = tmp_path / f"{name}.conf"
        conf.write_text(_blocks()[name], encoding="utf-8")
        got = subprocess.run([nats_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, check=False)
        assert got.returncode == 0, f"{name}: {got.stdout}{got.stderr}"
    # -t really checks: a typo is refused (so the pass above means something).
    bad = tmp_path / "bad.conf"
    bad.write_text(_blocks()["shop"].replace("deny_imports", "deny_importz"), encoding="utf-8")
    assert subprocess.run([nats_binary(), "-c", str(bad), "-t"], capture_output=True, check=False).returncode != 0


class _Server:
    def __init__(self, conf: Path, port: int) -> None:
        self.conf, self.port = conf, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> _Server:
        self.proc = subprocess.Popen([nats_binary(), "-c", str(self.conf), "-l", str(self.conf.with_suffix(".log"))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"nats-server exited; see {self.conf}.log"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    return s.recv(4) == b"INFO"
            except OSError:
                return False

        wait_until(listening, f"nats-server {self.conf.name} listening", timeout=15)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


async def _add_streams(shop_url: str, hq_url: str, blocks: dict[str, str]) -> None:
    import nats
    from nats.js.api import StreamConfig

    for url, key in ((shop_url, "shop_stream"), (hq_url, "hq_stream")):
        nc = await nats.connect(url)
        await nc.jetstream().add_stream(StreamConfig.from_response(json.loads(blocks[key])))
        await nc.close()


async def _publish(url: str, ids: list[str]) -> list[int]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out = []
        for i in ids:
            ack = await js.publish("settleguard.hwd.t1.alert", json.dumps({"data": {"id": i}}).encode(),
                                   headers={"Nats-Msg-Id": i})
            out.append(ack.seq)
        return out
    finally:
        await nc.close()


async def _hq_ids(url: str) -> list[str]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("settleguard.>", stream="SETTLEGUARD",
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        left = (await sub.consumer_info()).num_pending or 0
        ids = []
        while left:
            for msg in await sub.fetch(left, timeout=5):
                ids.append(json.loads(msg.data)["data"]["id"])
                left -= 1
        return ids
    finally:
        await nc.close()


def test_a_shop_leaf_node_keeps_accepting_while_head_office_is_away(tmp_path: Path) -> None:
    blocks = _blocks()
    hq_port, leaf_port, shop_port = free_port(), free_port(), free_port()
    hq_conf = (blocks["hq"].replace("0.0.0.0:4222", f"127.0.0.1:{hq_port}")
               .replace("0.0.0.0:7422", f"127.0.0.1:{leaf_port}").replace("/var/lib/nats", str(tmp_path / "hq")))
    shop_conf = (blocks["shop"].replace("127.0.0.1:4222", f"127.0.0.1:{shop_port}")
                 .replace("hq.example.com:7422", f"127.0.0.1:{leaf_port}")
                 .replace("/var/lib/nats", str(tmp_path / "shop")))
    assert hq_conf != blocks["hq"] and shop_conf != blocks["shop"]
    (tmp_path / "hq.conf").write_text(hq_conf, encoding="utf-8")
    (tmp_path / "shop.conf").write_text(shop_conf, encoding="utf-8")
    hq = _Server(tmp_path / "hq.conf", hq_port).start()
    shop = _Server(tmp_path / "shop.conf", shop_port).start()
    hq_url, shop_url = f"nats://127.0.0.1:{hq_port}", f"nats://127.0.0.1:{shop_port}"
    try:
        asyncio.run(_add_streams(shop_url, hq_url, blocks))
        assert asyncio.run(_publish(shop_url, ["a1", "a2"])) == [1, 2]
        wait_until(lambda: asyncio.run(_hq_ids(hq_url)) == ["a1", "a2"], "head office sourcing the shop", timeout=30,
                   pace=0.3)
        hq.stop()
        # WAN down: the tills' publishes still succeed in the shop.
        assert asyncio.run(_publish(shop_url, ["b1", "b2", "b3"])) == [3, 4, 5]
        hq.start()
        wait_until(lambda: asyncio.run(_hq_ids(hq_url)) == ["a1", "a2", "b1", "b2", "b3"],
                   "head office catching up, once each and in order", timeout=60, pace=0.5)
    finally:
        shop.stop()
        hq.stop()
