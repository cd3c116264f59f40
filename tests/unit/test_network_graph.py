"""The host network graph's parsers, layout and picture. The measurements over real SSH
are in tests/integration/test_monitor_real.py and on the lab in tests/e2e/test_monitoring.py."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from baadal.config import Settings
from baadal.host import network_graph as G

pytestmark = pytest.mark.unit

PING_OK = """PING 10.99.0.12 (10.99.0.12) 56(84) bytes of data.

--- 10.99.0.12 ping statistics ---
5 packets transmitted, 5 received, 0% packet loss, time 820ms
rtt min/avg/max/mdev = 0.041/0.057/0.081/0.013 ms
"""
PING_LOST = """PING 10.99.0.99 (10.99.0.99) 56(84) bytes of data.

--- 10.99.0.99 ping statistics ---
5 packets transmitted, 0 received, 100% packet loss, time 4090ms
"""


def test_parsers() -> None:
    assert G.parse_ping_rtt(PING_OK) == 0.057
    assert G.parse_ping_rtt(PING_LOST) is None
    assert G.parse_ping_rtt("") is None
    report = json.dumps({"end": {"sum_received": {"bits_per_second": 9_412_345_678.9}}})
    assert G.parse_iperf3_mbps(report) == 9412.3
    for bad in ("", "{}", '{"end": {"sum_received": null}}', "iperf3: error"):
        with pytest.raises(ValueError, match="unexpected iperf3 output"):
            G.parse_iperf3_mbps(bad)


@pytest.mark.parametrize(
    ("mbps", "text"),
    [(1000, "1Gbit/s"), (10000, "10Gbit/s"), (100, "100Mbit/s"), (2500, "2500Mbit/s"),
     (-1, "unknown"), (None, "unknown")],
)  # fmt: skip
def test_link_speed_in_the_seeds_form(mbps: int | None, text: str) -> None:
    assert G.format_link_speed(mbps) == text


@pytest.mark.parametrize("count", [1, 2, 3, 7, 40])
def test_nodes_never_overlap_and_stay_on_the_picture(count: int) -> None:
    places = G.node_positions(count)
    assert len(places) == count
    for x, y in places:
        assert G._NODE_RADIUS <= x <= G._SVG_SIZE - G._NODE_RADIUS
        assert G._NODE_RADIUS <= y <= G._SVG_SIZE - G._NODE_RADIUS
    if count <= 7:  # a few hosts: circles do not touch
        for i, (x1, y1) in enumerate(places):
            for x2, y2 in places[i + 1 :]:
                assert ((x1 - x2) ** 2 + (y1 - y2) ** 2) ** 0.5 > 2 * G._NODE_RADIUS
    assert G.node_positions(count) == places  # the same picture every time


def test_picture_and_json_hold_every_node_and_edge(settings: Settings) -> None:
    places = G.node_positions(3)
    nodes = [G.Node(i, f"h<{i}>", f"10.0.0.{i}", "10Gbit/s", *places[i]) for i in range(3)]
    edges = [
        G.Edge("0", 0, 1, 0.05, 9400.0),
        G.Edge("1", 1, 0, 0.06, 9100.0),
        G.Edge("2", 0, 2, None, None),
    ]
    json_path, svg_path = G.save_graph(G.NetworkGraph(nodes, edges), settings)
    svg = ElementTree.parse(svg_path).getroot()  # well-formed, names escaped
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f"{ns}circle")) == 3
    assert len(svg.findall(f"{ns}line")) == 3
    texts = [t.text for t in svg.findall(f"{ns}text")]
    assert "h<1>" in texts and "0.05 ms : 9400 Mbit/s" in texts
    assert "unreachable : failed" in texts
    data = json.loads(json_path.read_text())
    assert [n["label"] for n in data["nodes"]] == ["10Gbit/s"] * 3
    assert data["edges"][0] == {
        "id": "0", "source": 0, "target": 1, "latency_ms": 0.05, "throughput_mbps": 9400.0,
        "label": "0.05 ms : 9400 Mbit/s",
    }  # fmt: skip
    leftovers = [p for p in Path(json_path.parent).iterdir() if p.name.startswith(".")]
    assert leftovers == []
