"""``ferrocsp.graph()`` and ``ferrocsp graph``: networks as DOT, checked structurally, and SVG."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ferrocsp as csp
from _support import need_tool, wait_until
from ferrocsp._cli import main
from ferrocsp._graph import record

ROOT = Path(__file__).resolve().parents[1]

_NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
_EDGE = re.compile(r'^\s*(\w+) -> (\w+) \[label="((?:[^"\\]|\\.)*)"(, dir=none)?\];$')
_CLUSTER = re.compile(r'^\s*label="((?:[^"\\]|\\.)*)";$')

Edge = tuple[str, str, str, bool]  # from label, to label, channel, directed


class Dot:
    """The nodes, edges and clusters of a DOT text written by ``ferrocsp``."""

    def __init__(self, text: str) -> None:
        lines = text.strip().splitlines()
        assert lines[0].startswith("digraph "), text
        assert lines[-1] == "}", text
        self.labels: dict[str, str] = {}
        self.channel_nodes: set[str] = set()
        self.clusters: list[str] = []
        raw: list[tuple[str, str, str, bool]] = []
        for ln in lines[1:-1]:
            if m := _EDGE.match(ln):
                raw.append((m[1], m[2], m[3], m[4] is None))
            elif m := _NODE.match(ln):
                self.labels[m[1]] = m[2]
                if "shape=ellipse" in m[3]:
                    self.channel_nodes.add(m[1])
            elif m := _CLUSTER.match(ln):
                self.clusters.append(m[1])
        self.ids = raw

    def edges(self, among: set[str] | None = None) -> set[Edge]:
        def name(n: str) -> str:
            return f"({self.labels[n]})" if n in self.channel_nodes else self.labels[n]

        return {
            (name(a), name(b), c, d)
            for a, b, c, d in self.ids
            if among is None or (a in among and b in among)
        }

    def processes(self) -> list[str]:
        return [v for k, v in self.labels.items() if k not in self.channel_nodes]


@csp.process
def source(out: csp.Writer, n: int) -> None:
    with out:
        for i in range(n):
            out.write(i)


@csp.process
def double(inp: csp.Reader, out: csp.Writer) -> None:
    with inp, out:
        for v in inp:
            out.write(2 * v)


@csp.process
def sink(inp: csp.Reader) -> list[int]:
    return list(inp)


@csp.process
def gate(ch: csp.Channel, go: csp.Reader) -> None:
    go.read()


def _edges_of(dot: Dot, nodes: set[str]) -> set[Edge]:
    ids = {k for k, v in dot.labels.items() if v in nodes or k in dot.channel_nodes}
    return dot.edges(ids)


@pytest.mark.timeout(30)
def test_live_pipeline_is_drawn_from_writer_to_reader() -> None:
    a, b = csp.Channel(name="g-a"), csp.Channel(name="g-b")
    go = csp.Channel(name="g-go")
    h = csp.Par(
        source(a.writer(), 2),
        double(a.reader(), b.writer()),
        sink(b.reader()),
        gate(a, go.reader()),
    ).start()
    try:
        wait_until(lambda: go.stats().readers_waiting == 1)
        dot = Dot(csp.graph())
    finally:
        go.write(None)
        assert h.join(10) == [None, None, [0, 2], None]
    assert "Par(source, double, sink, gate)" in dot.clusters
    for name in ("source", "double", "sink", "gate"):
        assert dot.processes().count(name) >= 1
    edges = _edges_of(dot, {"source", "double", "sink", "gate"})
    # g-a: one writer, one reader and a plain holder: a channel node; g-b: a plain edge.
    assert ("double", "sink", "g-b", True) in edges
    assert ("source", "(g-a)", "g-a", True) in edges
    assert ("(g-a)", "double", "g-a", True) in edges
    assert ("gate", "(g-a)", "g-a", False) in edges
    # g-go: only a reader among the processes (the test's thread writes): a channel node.
    assert ("(g-go)", "gate", "g-go", True) in edges


@pytest.mark.timeout(30)
def test_graph_directions_fan_out_and_plain_channels() -> None:
    jobs, res, pair = csp.Channel(name="f-jobs"), csp.Channel(name="f-res"), csp.Channel()
    go = csp.Channel(name="f-go")
    h = csp.Par(
        source(jobs.writer(), 0),
        double(jobs.reader(), res.writer()),
        double(jobs.reader(), res.writer()),
        sink(res.reader()),
        gate(pair, go.reader()),
        gate(pair, go.reader()),
    )
    dot = Dot(_live_dot(h, go))
    edges = dot.edges()
    # One writer to two readers: two edges; two writers to one reader: two edges.
    assert sum(1 for e in edges if e[2] == "f-jobs" and e[0] == "source") == 1  # de-duplicated
    jobs_edges = [e for e in dot.ids if e[2] == "f-jobs" and dot.labels[e[0]] == "source"]
    assert len(jobs_edges) == 2
    assert all(e[3] for e in jobs_edges)
    res_edges = [e for e in dot.ids if e[2] == "f-res"]
    assert len(res_edges) == 2
    assert all(dot.labels[e[1]] == "sink" for e in res_edges)
    # A plain channel between exactly two processes: one undirected edge.
    pair_edges = [e for e in dot.ids if e[2] == pair.name]
    assert len(pair_edges) == 1
    assert not pair_edges[0][3]
    assert [dot.labels[pair_edges[0][0]], dot.labels[pair_edges[0][1]]] == ["gate", "gate"]
    # Two readers and no writer among the processes: a channel node.
    assert ("(f-go)", "gate", "f-go", True) in edges


def _live_dot(par: csp.Par, go: csp.Channel) -> str:
    h = par.start()
    try:
        wait_until(lambda: go.stats().writers_waiting + go.stats().readers_waiting >= 1)
        return csp.graph()
    finally:
        h.poison()
        h.join(10)


@pytest.mark.timeout(30)
def test_nested_par_is_drawn_once_inside_its_network() -> None:
    a, b, go = csp.Channel(name="n-a"), csp.Channel(name="n-b"), csp.Channel(name="n-go")
    inner = csp.Par(double(a.reader(), b.writer()), sink(b.reader()))
    dot = Dot(_live_dot(csp.Par(source(a.writer(), 0), inner, gate(a, go.reader())), go))
    mine = [c for c in dot.clusters if c.startswith("Par(double")]
    assert mine == ["Par(double, sink)"]
    assert "Par(source, Par(double, sink), gate)" in dot.clusters
    assert ("double", "sink", "n-b", True) in dot.edges()
    assert dot.processes().count("Par(double, sink)") == 0


def _example_dot(tmp_path: Path) -> Dot:
    out = tmp_path / "pp.dot"
    assert main(["graph", str(ROOT / "examples" / "poison_pipeline.py"), "-o", str(out)]) == 0
    return Dot(out.read_text(encoding="utf-8"))


@pytest.mark.timeout(60)
def test_cli_records_every_network_of_an_example(tmp_path: Path) -> None:
    dot = _example_dot(tmp_path)
    assert dot.clusters == [
        "Par(Generate, Map, Filter, Delta, ...)",
        "Par(Generate, Map, Sink)",
        "Par(Count, Map, Filter, Sink)",
    ]
    assert dot.processes() == [
        *("Generate", "Map", "Filter", "Delta", "consumer", "Printer"),
        *("Generate", "Map", "Sink"),
        *("Count", "Map", "Filter", "Sink"),
    ]
    edges = dot.edges()
    # Part 1: builtins get plain channels (undirected), the consumer a Reader end.
    assert {
        ("Generate", "Map", "a", False),
        ("Map", "Filter", "b", False),
        ("Filter", "Delta", "c", False),
        ("Delta", "consumer", "d", True),
        ("Delta", "Printer", "e", False),
    } <= edges
    # Part 3: ends everywhere, so every edge is directed from writer to reader.
    assert {
        ("Count", "Map", "a", True),
        ("Map", "Filter", "b", True),
        ("Filter", "Sink", "c", True),
    } <= edges
    assert len(dot.ids) == 5 + 2 + 3


@pytest.mark.timeout(60)
def test_cli_draws_an_svg(tmp_path: Path) -> None:
    need_tool("dot", "install Graphviz (apt-get install graphviz)", probe="-V")
    script = tmp_path / "net.py"
    script.write_text(
        "import sys\nimport ferrocsp as csp\n"
        "@csp.process\ndef src(out):\n    with out:\n        out.write(sys.argv[1])\n"
        "@csp.process\ndef dst(inp):\n    print(list(inp))\n"
        "ch = csp.Channel(name='wire')\n"
        "csp.Par(src(ch.writer()), dst(ch.reader())).run()\n",
        encoding="utf-8",
    )
    svg = tmp_path / "net.svg"
    proc = subprocess.run(
        [sys.executable, "-m", "ferrocsp", "graph", str(script), "-o", str(svg), "--", "hello"],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "['hello']" in proc.stdout
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text
    for word in ("src", "dst", "wire"):
        assert f">{word}</text>" in text


@pytest.mark.timeout(30)
def test_cli_says_how_to_get_graphviz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    script = tmp_path / "empty.py"
    script.write_text("pass\n", encoding="utf-8")
    assert main(["graph", str(script), "-o", str(tmp_path / "x.svg")]) == 1
    assert "install graphviz (apt-get install graphviz)" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_history_keeps_networks_that_ended_without_keeping_their_ends() -> None:
    ch = csp.Channel(name="h-wire")
    with record():
        csp.Par(once(ch.writer()), first(ch.reader())).run()
    assert "h-wire" not in csp.graph()  # not running any more
    dot = Dot(csp.graph(history=True))
    assert ("once", "first", "h-wire", True) in dot.edges()
    # Neither process retired its end; dropped, they retire, as the recording holds none.
    gc.collect()
    assert (ch.stats().writer_ends, ch.stats().reader_ends) == (0, 0)


@csp.process
def once(out: csp.Writer) -> None:
    out.write(1)


@csp.process
def first(inp: csp.Reader) -> int:
    return int(inp.read())
