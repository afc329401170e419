"""The history page (pruned_perf.analysis.site): its records (checks, JSON round trip), the HTML it writes
(the data embedded, nothing fetched from the network), and the page in a real headless Chromium: the
DOM after its scripts ran holds the charts, step markers, environment lines and readiness figures.

The browser tests skip where `chromium` is not on PATH, and fail there with PP_REQUIRE_BROWSER=1 (CI).
`save_screenshot(path)` saves a picture of a realistic page (docs/site-screenshot.png);
`save_screenshot(path, trial_page())` of the real trial's (docs/history-trial.png).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pruned_perf.analysis.site import INDEX, page_html, render
from pruned_perf.analysis.site_records import (SiteAB, SiteABRow, SiteCulprit, SiteEnvChange, SiteGroup, SiteMetric,
                                               SitePage, SiteRun, SiteStep)
from pruned_perf.core.errors import UserError

REPO = "https://github.com/example/pruned-perf"
COMMIT_URL = REPO + "/commit/{sha}"
COMPARE_URL = REPO + "/compare/{before}...{after}"
METRICS = [SiteMetric(name="latency_s", label="latency", unit="s", better="lower"),
           SiteMetric(name="tokens_per_s", label="tokens/s", unit="tokens/s", better="higher"),
           SiteMetric(name="ttft_s", label="TTFT", unit="s", better="lower"),
           SiteMetric(name="ppl", label="perplexity", unit="", better="lower")]
START = datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- synthetic histories


def sha(i: int, salt: str = "") -> str:
    return hashlib.sha1(f"{salt}commit {i}".encode()).hexdigest()


def point_ids(methods=("dense", "depth", "flap"), batches=(1, 4)) -> list[str]:
    return [f"smollm2-135m-{m}-in12-out32-M{b}-eager" for m in methods for b in batches]


def make_runs(n: int, env_at: int | None) -> list[SiteRun]:
    """A nightly run per day; torch moves from 2.12.0 to 2.13.0 before run env_at."""
    def torch(i):
        return "2.13.0" if env_at is not None and i >= env_at else "2.12.0"
    return [SiteRun(commit=sha(i), subject=f"Nightly change {i}: tune the <kernel> & cache", measured=(
        START + timedelta(days=i)).isoformat(), author_time=(START + timedelta(days=i, hours=-3)).isoformat(),
        event="bisect" if i == n - 2 else "schedule",
        env={"torch": torch(i), "transformers": "5.25.0", "device": "cpu"}) for i in range(n)]


def make_values(points: list[str], n: int, env_at: int | None, step: tuple | None, seed: int = 0) -> dict:
    """Latency with 1.5% noise, 4% faster after the environment change, `step` = (point, at, ratio)
    slower from run at; tokens/s and TTFT follow latency; perplexity is fixed per method. The last
    point has no value in two runs (out of memory)."""
    rng = random.Random(seed)
    values: dict = {m.name: {} for m in METRICS}
    for k, pid in enumerate(points):
        base, batch = 0.05 * (1 + 0.4 * k), int(re.search(r"-M(\d+)-", pid).group(1))
        latency = []
        for i in range(n):
            level = base * (0.96 if env_at is not None and i >= env_at else 1.0)
            level *= step[2] if step and pid == step[0] and i >= step[1] else 1.0
            latency.append(level * (1 + rng.gauss(0, 0.015)))
        if k == len(points) - 1:
            latency[n // 3] = latency[n // 3 + 1] = None
        values["latency_s"][pid] = latency
        values["tokens_per_s"][pid] = [None if v is None else batch * 32 / v for v in latency]
        values["ttft_s"][pid] = [None if v is None else v * 0.12 for v in latency]
        values["ppl"][pid] = [None if v is None else 20.0 + 3 * (k // 2) for v in latency]
    return values


def make_ab(points: list[str]) -> SiteAB:
    rows = [SiteABRow(point=points[-2], pairs=24, latency="1.252x [1.201, 1.303]", ttft="1.249x [1.190, 1.311]",
                      verdict="regressed", reason="latency over the 5% threshold"),
            SiteABRow(point=points[0], pairs=16, latency="1.003x [0.991, 1.015]", ttft="0.998x [0.980, 1.017]",
                      verdict="unchanged", reason="90% interval within 5%"),
            SiteABRow(point=points[1], pairs=40, latency="1.021x [0.996, 1.047]", ttft="1.010x [0.985, 1.036]",
                      verdict="inconclusive", reason="the interval crosses the threshold")]
    return SiteAB(title="base 1a2b3c4 vs new 5d6e7f8", rows=rows,
                  lines=["base: 1a2b3c4 (torch 2.13.0, transformers 5.25.0, 2 threads)",
                         "new: 5d6e7f8 (torch 2.13.0, transformers 5.25.0, 2 threads)",
                         "pairs of rounds in alternating order, a look every 8 pairs up to 48",
                         "REGRESSION: 1 regressed, 1 inconclusive, 1 unchanged"])


def make_group(n: int = 60, points: list[str] | None = None, env_at: int | None = 25, step_at: int | None = 40,
               hardware: str = "cpu-intel-xeon-processor-2-cores", profile: str = "quick", seed: int = 0,
               **kwargs) -> SiteGroup:
    """A history of n runs: an environment change at env_at, and a regressed step (with its culprit) of
    the second-to-last point's latency at step_at."""
    points = points or point_ids()
    step = (points[-2], step_at, 1.25) if step_at is not None else None
    steps = [] if step is None else [SiteStep(
        point=points[-2], metric="latency_s", before=step_at - 1, at=step_at, ratio=1.25, ci_low=1.2, ci_high=1.3,
        standing="regressed", kind="step",
        culprit=SiteCulprit(commit=sha(step_at), subject=f"Nightly change {step_at}: tune the <kernel> & cache",
                            ratio=1.24))]
    fields = dict(hardware=hardware, profile=profile, runs=make_runs(n, env_at), points=points, metrics=METRICS,
                  env_changes=[SiteEnvChange(at=env_at, what="torch 2.12.0 -> 2.13.0")] if env_at else [],
                  values=make_values(points, n, env_at, step, seed), steps=steps, ab=make_ab(points))
    return SiteGroup(**{**fields, **kwargs})


def make_page(*groups: SiteGroup, **kwargs) -> SitePage:
    fields = dict(title="pruned_perf history", generated="2025-03-02T06:00:00+00:00", commit_url=COMMIT_URL,
                  compare_url=COMPARE_URL, groups=list(groups) or [make_group()])
    return SitePage(**{**fields, **kwargs})


def year_page() -> SitePage:
    """A year of nightly runs of a 24-point profile, 4 metrics: the page's size limit."""
    points = point_ids(methods=("dense", "depth", "llm-pruner", "flap"), batches=(1, 2, 4, 8, 16, 32))
    group = make_group(n=365, points=points, env_at=200, step_at=300)
    gradual = SiteStep(point=points[0], metric="ttft_s", before=100, at=160, ratio=1.08, ci_low=1.04, ci_high=1.12,
                       standing="gradual", kind="gradual")
    return make_page(dataclasses.replace(group, steps=(*group.steps, gradual)))


def tiny_png() -> str:
    """The base64 of a 1x1 grey PNG, made by hand (the caller's figure comes from matplotlib)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = (PNG_MAGIC + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


# ---------------------------------------------------------------- the records


def test_a_page_goes_to_json_and_back_unchanged():
    page = make_page(make_group(figure_png=tiny_png()),
                     make_group(n=12, hardware="nvidia-h100-80gb-hbm3", profile="smoke", env_at=None, step_at=5))
    data = json.loads(json.dumps(page.to_dict()))
    assert SitePage.from_dict(data) == page


def _bad_values(page_dict: dict) -> None:
    page_dict["groups"][0]["values"]["latency_s"][page_dict["groups"][0]["points"][0]].pop()


def _step(page_dict: dict, **changes) -> None:
    page_dict["groups"][0]["steps"][0].update(changes)


@pytest.mark.parametrize("change,message", [
    (_bad_values, "a list of one value per run (60), got '<list of 59>'"),
    (lambda d: _step(d, at=60), "step at must be a run index in 1..59, got 60"),
    (lambda d: _step(d, before=40), "at must be a run index after before (40), got 40"),
    (lambda d: _step(d, standing="worse"), "unknown standing 'worse'; valid choices: environment, gradual, "
                                           "improved, regressed, suspected"),
    (lambda d: _step(d, kind="jump"), "unknown kind 'jump'; valid choices: gradual, step"),
    (lambda d: _step(d, point="no-such-point"), "unknown step point 'no-such-point'"),
    (lambda d: _step(d, ratio=0), "ratio must be a finite positive number, got 0"),
    (lambda d: d["groups"][0]["runs"][3].update(commit="abc123"), "groups[0].runs[3]: commit must be a 40-hex"),
    (lambda d: d["groups"][0]["runs"][0].update(measured="yesterday"), "measured must be an ISO date"),
    (lambda d: d["groups"][0]["env_changes"][0].update(at=0), "at must be a run index >= 1, got 0"),
    (lambda d: d["groups"][0]["env_changes"][0].update(at=60), "env_changes at must be a run index in 1..59"),
    (lambda d: d["groups"][0]["metrics"][0].update(better="smaller"), "unknown better 'smaller'; valid choices: "
                                                                      "higher, lower"),
    (lambda d: d["groups"][0]["values"].update(watts={}), "unknown metric in values 'watts'"),
    (lambda d: d["groups"][0]["values"]["ppl"][d["groups"][0]["points"][1]].__setitem__(3, float("nan")),
     "values must be finite numbers or null, got nan"),
    (lambda d: d["groups"][0].update(figure_png="figure.png"), "figure_png must be null or the base64 text of a PNG"),
    (lambda d: d.update(compare_url=REPO + "/compare/{before}"), "compare_url must be null or an http(s) URL"),
    (lambda d: d.update(commit_url="javascript:alert({sha})"), "commit_url must be null or an http(s) URL"),
    (lambda d: d["groups"].append(d["groups"][0]), "groups (hardware / profile) must be unique"),
    (lambda d: d["groups"][0].update(plot="x"), "unknown fields ['plot']"),
    (lambda d: d["groups"][0]["runs"][0].pop("event"), "lacks fields: event"),
])
def test_bad_input_is_one_error_naming_the_value(change, message):
    data = make_page().to_dict()
    change(data)
    with pytest.raises(UserError, match=re.escape(message)):
        SitePage.from_dict(data)


def test_records_built_in_python_are_checked_too():
    with pytest.raises(UserError, match=re.escape("group cpu-x / quick: step at must be a run index in 1..59")):
        make_group(hardware="cpu-x", steps=[SiteStep(point=point_ids()[0], metric="latency_s", before=3, at=60,
                                                     ratio=1.1, ci_low=1.0, ci_high=1.2, standing="suspected",
                                                     kind="step")])
    with pytest.raises(UserError, match="runs must be a list of SiteRun"):
        make_group(runs=[{"commit": sha(0)}])


# ---------------------------------------------------------------- the HTML


def _embedded(text: str) -> dict:
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_the_page_embeds_the_data_and_a_subject_cannot_end_its_script():
    hostile = "fix </script><script>alert(1)</script> <!-- and more"
    group = make_group()
    group = dataclasses.replace(group, runs=[dataclasses.replace(group.runs[0], subject=hostile), *group.runs[1:]])
    text = page_html(make_page(group))
    assert text.count("<script") == 2 and text.count("</script>") == 2  # the data and the code, nothing more
    data = _embedded(text)["groups"][0]
    assert data["values"] == group.values and tuple(data["points"]) == group.points
    assert [r["commit"] for r in data["runs"]] == [r.commit for r in group.runs]
    assert data["runs"][0]["subject"] == hostile
    step = data["steps"][0]
    assert (step["before"], step["at"], step["label"]) == (39, 40, "1.25x regressed")
    level = 0.05 * (1 + 0.4 * 4) * 0.96  # the point's latency after the environment change at run 25
    assert (step["from"], step["old"]) == (25, pytest.approx(level, rel=0.02))  # the median of runs 25..39
    assert (step["to"], step["new"]) == (59, pytest.approx(level * 1.25, rel=0.02))


def test_nothing_is_fetched_from_the_network():
    """Every http(s) address in the page is a link a reader may follow, never a resource it loads."""
    text = page_html(make_page(make_group(figure_png=tiny_png())))
    addresses = [m.start() for m in re.finditer(r"https?://", text)]
    links = [m.start(1) for m in re.finditer(r'<a href="(https?://[^"]*)"', text)]
    assert addresses and sorted(addresses) == sorted(links)
    assert not re.search(r"@import|url\(|<link|<iframe|fetch\(|XMLHttpRequest|import\(", text)
    assert not re.search(r'src="(?!data:image/png;base64,)', text)


def test_the_steps_table_links_the_range_and_the_culprit_newest_first():
    group = make_group()
    first = SiteStep(point=group.points[0], metric="ttft_s", before=10, at=20, ratio=0.9, ci_low=0.85, ci_high=0.95,
                     standing="improved", kind="gradual")
    text = page_html(make_page(dataclasses.replace(group, steps=[first, *group.steps])))
    table = re.search(r'<table class="steps">.*?</table>', text, re.S).group(0)
    rows = re.findall(r"<tr class=\"step-row s-(\w+)\">", table)
    assert rows == ["regressed", "improved"]
    assert f'href="{REPO}/compare/{sha(39)}...{sha(40)}"' in table
    assert f'href="{REPO}/commit/{sha(40)}">{sha(40)[:7]}</a>' in table
    assert "total 0.90x [0.85, 0.95]" in table and "gradual over runs 10-20" in table
    assert "1.25x [1.20, 1.30]" in table and "tune the &lt;kernel&gt; &amp; cache (1.24x)" in table


def test_without_link_templates_commits_are_plain_text():
    text = page_html(make_page(commit_url=None, compare_url=None))
    assert "https://" not in text and f"{sha(39)[:7]}..{sha(40)[:7]}" in text


def test_render_writes_index_html_and_refuses_a_file_as_the_directory(tmp_path):
    path = render(make_page(), tmp_path / "site" / "new")
    assert path == tmp_path / "site" / "new" / INDEX and "<svg" in path.read_text(encoding="utf-8")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="it is a file, not a directory"):
        render(make_page(), tmp_path / "file")


def test_a_page_without_groups_says_so():
    assert "No runs in the history." in page_html(make_page(groups=[]))


# ---------------------------------------------------------------- in a real browser


@dataclass
class Node:
    """An element of a dumped DOM: its tag, attributes and children (elements and text)."""

    tag: str
    attrs: dict
    children: list = field(default_factory=list)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        return [n for n in self.iter() if n.tag == tag and (cls is None or cls in n.attrs.get("class", "").split())]

    def text(self) -> str:
        return "".join(c.text() if isinstance(c, Node) else c for c in self.children)


class _TreeBuilder(HTMLParser):
    # elements with no end tag in HTML's serialisation (Chromium closes every other one, SVG's included)
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_dom(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    return builder.root


def find_chromium() -> str | None:
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("PP_REQUIRE_BROWSER") == "1":
            pytest.fail("PP_REQUIRE_BROWSER=1 but chromium is not on PATH (apt-get install chromium)")
        pytest.skip("chromium is not on PATH (apt-get install chromium; PP_REQUIRE_BROWSER=1 makes this fail)")
    return path


def run_chromium(chromium: str, page: Path, *args: str) -> str:
    """Open `page` from its file in headless Chromium with every network service off and host names
    unresolvable; return what it printed (the DOM, with --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="pp-chromium-") as profile:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dump_dom(chromium: str, page: Path) -> Node:
    return parse_dom(run_chromium(chromium, page, "--dump-dom"))


def _section(dom: Node, gi: int) -> Node:
    return next(n for n in dom.find_all("section") if n.attrs.get("id") == f"g{gi}")


def _chart(section: Node, point: str) -> Node:
    return next(n for n in section.find_all("svg", "chart") if n.attrs.get("data-point") == point)


@pytest.fixture(scope="module")
def two_groups(tmp_path_factory, chromium):
    """A realistic page of two groups, rendered and opened in Chromium: (page, dumped DOM)."""
    page = make_page(make_group(figure_png=tiny_png()),
                     make_group(n=30, hardware="nvidia-h100-80gb-hbm3", profile="smoke", points=point_ids(
                         methods=("dense", "flap"), batches=(1,)), env_at=None, step_at=12, ab=None))
    path = render(page, tmp_path_factory.mktemp("site"))
    return page, dump_dom(chromium, path)


def test_the_browser_draws_a_chart_per_point_of_each_group(two_groups):
    page, dom = two_groups
    body = dom.find_all("body")[0]
    assert body.attrs["data-charts"] == str(sum(len(g.points) for g in page.groups))
    assert int(body.attrs["data-ready-ms"]) >= 0
    for gi, group in enumerate(page.groups):
        charts = _section(dom, gi).find_all("svg", "chart")
        assert tuple(c.attrs["data-point"] for c in charts) == group.points
        for chart, point in zip(charts, group.points):
            assert chart.find_all("title")[0].text() == f"{point}: latency (s), lower is better"


def test_the_browser_marks_the_step_on_its_chart_and_links_its_range(two_groups):
    page, dom = two_groups
    group, section = page.groups[0], _section(dom, 0)
    step = group.steps[0]
    marks = _chart(section, step.point).find_all("g", "step")
    assert len(marks) == 1 and "1.25x regressed" in marks[0].text()
    assert len(marks[0].find_all("line", "level")) == 2  # the old and the new level
    assert not any(_chart(section, p).find_all("g", "step") for p in group.points if p != step.point)
    links = [a.attrs["href"] for a in section.find_all("a")]
    assert COMPARE_URL.format(before=sha(39), after=sha(40)) in links
    assert COMMIT_URL.format(sha=sha(40)) in links


def _dots(chart: Node) -> int:
    """How many values a chart draws: its dots are one path, a move per dot."""
    paths = chart.find_all("path", "dots")
    return paths[0].attrs["d"].count("M") if paths else 0


def test_the_browser_draws_environment_changes_and_every_value_on_every_chart(two_groups):
    page, dom = two_groups
    group, section = page.groups[0], _section(dom, 0)
    for point in group.points:
        chart = _chart(section, point)
        env = chart.find_all("g", "env")
        assert len(env) == 1 and "torch 2.12.0 -> 2.13.0" in env[0].text()
        assert _dots(chart) == sum(v is not None for v in group.values["latency_s"][point])
    assert not _section(dom, 1).find_all("g", "env")


# Test scripts appended to a page: what a reader's hand would do. HOVER moves the pointer onto the 8th dot
# (run 7) of the first chart; SWITCH picks TTFT in the first group's metric control.
HOVER = """const svg = document.querySelector("svg.chart"), box = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal;
const [x, y] = svg.querySelector(".dots").getAttribute("d").split("M")[8].split("h")[0].split(",").map(Number);
svg.dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: box.left + x / vb.width * box.width,
                                                clientY: box.top + y / vb.height * box.height}));"""
SWITCH = """const sel = document.querySelector("select.metric"); sel.value = "ttft_s";
sel.dispatchEvent(new Event("change", {bubbles: true}));"""


def _open_with(chromium: str, page: SitePage, tmp_path: Path, *scripts: str) -> Node:
    text = page_html(page).replace("</body>", "".join(f"<script>{js}</script>" for js in scripts) + "</body>")
    (tmp_path / INDEX).write_text(text, encoding="utf-8")
    return dump_dom(chromium, tmp_path / INDEX)


def _tip(dom: Node) -> Node:
    return next(n for n in dom.find_all("div") if n.attrs.get("id") == "tip")


def test_the_tooltip_names_the_run_under_the_pointer(tmp_path, chromium):
    page = make_page()
    dom = _open_with(chromium, page, tmp_path, HOVER)
    tip = _tip(dom)
    value = page.groups[0].values["latency_s"][page.groups[0].points[0]][7]
    assert "hidden" not in tip.attrs
    assert tip.text().splitlines() == [f"run 7: {sha(7)[:7]} Nightly change 7: tune the <kernel> & cache",
                                       "2025-01-08 02:00:00+00:00 (schedule)", f"latency: {value:.4g} s"]
    ring = dom.find_all("circle", "ring")[0]
    assert ring.attrs["visibility"] == "visible" and ring.attrs["cx"]


def test_the_metric_control_redraws_the_charts(tmp_path, chromium):
    """Switching the metric draws every chart in the new one: its values and the environment lines, no
    latency step; the tooltip then gives TTFT."""
    page = make_page()
    dom = _open_with(chromium, page, tmp_path, SWITCH, HOVER)
    section = _section(dom, 0)
    charts = section.find_all("svg", "chart")
    assert len(charts) == len(page.groups[0].points)
    assert all(c.find_all("title")[0].text().endswith(": TTFT (s), lower is better") for c in charts)
    assert not section.find_all("g", "step") and len(section.find_all("g", "env")) == len(charts)
    assert _tip(dom).text().splitlines()[-1].startswith("TTFT: ")


def test_a_steps_link_shows_its_metric_on_the_charts(tmp_path, chromium):
    group = make_group()
    ttft = SiteStep(point=group.points[0], metric="ttft_s", before=10, at=11, ratio=1.1, ci_low=1.05, ci_high=1.15,
                    standing="suspected", kind="step")
    page = make_page(dataclasses.replace(group, steps=[ttft]))
    section = _section(_open_with(chromium, page, tmp_path, 'document.querySelector("table.steps a").click();'), 0)
    chart = _chart(section, group.points[0])
    assert chart.find_all("title")[0].text().endswith(": TTFT (s), lower is better")
    assert "1.10x suspected" in chart.find_all("g", "step")[0].text()


def test_a_year_of_nightly_runs_renders_and_draws(tmp_path, chromium):
    """365 runs x 24 points x 4 metrics: prints the time render takes and the page's own readiness
    (data-ready-ms); asserts only what is drawn (timings on a shared machine are not for asserts)."""
    page = year_page()
    started = time.perf_counter()
    path = render(page, tmp_path)
    seconds = time.perf_counter() - started
    dom = dump_dom(chromium, path)
    body = dom.find_all("body")[0]
    print(f"\nyear page: render {seconds:.3f} s, {path.stat().st_size / 1e6:.2f} MB; "
          f"ready in Chromium at {body.attrs['data-ready-ms']} ms, {body.attrs['data-charts']} charts")
    assert body.attrs["data-charts"] == "24" and int(body.attrs["data-ready-ms"]) >= 0
    assert sum(_dots(chart) for chart in dom.find_all("svg", "chart")) == 24 * 365 - 2


# The history of a real trial on the 2-core CPU (docs/history.md, "Trials"): 21 nightly runs of SmolLM2
# dense and depth at M=1, one commit of which makes 20 of its 30 blocks run their MLP twice, with the
# A/B that confirmed the step and the bisection that named that commit.
TRIAL = Path(__file__).parent / "data" / "history-trial"


def trial_page() -> SitePage:
    """The page of the real trial's history (docs/history-trial.png is its screenshot)."""
    from pruned_perf.analysis.site_data import site_page

    return site_page(TRIAL, REPO)


def test_the_real_trials_page_shows_the_planted_step_and_its_culprit(tmp_path, chromium):
    page = trial_page()
    (group,) = page.groups
    planted = [i for i, run in enumerate(group.runs) if run.subject.startswith("plant:")]
    assert len(group.runs) == 21 and len(planted) == 1
    dom = dump_dom(chromium, render(page, tmp_path))
    section = _section(dom, 0)
    rows = [r for r in section.find_all("tr", "step-row") if "s-regressed" in r.attrs["class"]]
    assert rows, "no regressed step on the page"
    culprit = COMMIT_URL.format(sha=group.runs[planted[0]].commit)
    for row in rows:  # each regressed step: its range ends at the planted commit, which is its culprit
        links = [a.attrs["href"] for a in row.find_all("a") if a.attrs.get("href", "").startswith("https://")]
        assert culprit in links and "plant: the MLPs of the first 20 blocks run twice" in row.text()
        assert links[0] == COMPARE_URL.format(before=group.runs[planted[0] - 1].commit, after=group.runs[planted[0]].commit)
    for step in group.steps:
        if step.standing == "regressed":
            marks = _chart(section, step.point).find_all("g", "step")
            assert any("regressed" in m.text() for m in marks)
    assert int(dom.find_all("body")[0].attrs["data-charts"]) == len(group.points) == 2


def test_the_screenshot_is_a_full_window_png(tmp_path, chromium):
    save_screenshot(tmp_path / "shot.png")
    png = (tmp_path / "shot.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and struct.unpack(">II", png[16:24]) == (1400, 2000)


def save_screenshot(path, page: SitePage | None = None) -> Path:
    """Render `page` (default: a realistic 60-run history: one regressed step with its culprit, one
    environment change, a small A/B table) and save Chromium's 1400x2000 screenshot of it to `path`."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("chromium is not on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="pp-site-") as tmp:
        index = render(page or make_page(), tmp)
        shot = Path(tmp) / "shot.png"
        run_chromium(chromium, index, f"--screenshot={shot}", "--window-size=1400,2000", "--hide-scrollbars")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, path)
    return Path(path)

