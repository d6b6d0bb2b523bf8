"""The HTML report: built by the workflow from a real (tiny) run, its numbers against the
board, the precision comparison, bad input, `snakemake --report`, and a real browser
(headless Chromium through Playwright) driving the pages opened from disk."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from conftest import missing_service, save_tiny
from test_workflow import _make_tasks
from workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
GEN_TASK = """task: gen_add
dataset: {source: gen_add.jsonl}
output_type: generate_until
doc_to_text: "Q: {{q}}\\nA:"
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 6}
filter_list:
  - name: strict-match
    filter: [{function: regex, regex_pattern: "(-?[0-9]+)"}, {function: take_first}]
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
primary_metric: exact_match,strict-match
"""
DISPLAY = ["add", "mul", "grp", "gen_add"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer_dir):
    """The workflow, report included, on two tiny models x fp32, bf16 x four tasks
    (one sharded, one group, one generation task)."""
    root = tmp_path_factory.mktemp("report")
    ws = Workspace(root)
    ws.tasks = _make_tasks(root)
    rows = [{"q": f"What is {a} plus {a}?", "answer": str(2 * a)} for a in range(1, 7)]
    (ws.tasks / "gen_add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ws.tasks / "gen_add.yaml").write_text(GEN_TASK)
    models = {
        f"tiny-{arch}": save_tiny(arch, root / f"src-{arch}", tokenizer_dir, seed=i)
        for i, arch in enumerate(("llama", "qwen2"))
    }
    ws.write_config(
        {
            "models": {name: {"source": str(src)} for name, src in models.items()},
            "precisions": ["fp32", "bf16"],
            "tasks": {"add": {"shards": 2}, "mul": None, "grp": None, "gen_add": None},
            "tasks_dir": str(ws.tasks),
            "inference": {"token_budget": 512, "threads": 1},
        }
    )
    ws.snakemake()
    return ws


def board(ws):
    return pl.read_parquet(ws.wd / "results/leaderboard.parquet")


def build(ws, out, **kw):
    """build_report as the workflow's rule calls it, from the run's folder."""
    from llmboard.results.report import build_report

    cwd = os.getcwd()
    os.chdir(ws.wd)
    try:
        return build_report(
            out,
            "results/leaderboard.parquet",
            agreement="results/precision_agreement.parquet",
            display=DISPLAY,
            benchmarks="benchmarks",
            tasks_dir=ws.tasks,
            **kw,
        )
    finally:
        os.chdir(cwd)


# ---------------------------------------------------------------- the workflow's report
@pytest.mark.slow
def test_workflow_writes_the_report(run):
    rep = run.wd / "results/report"
    for page in ("index.html", "precision.html", "tasks.html", "cost.html", "provenance.html"):
        assert (rep / page).is_file(), page
    for t in ("add", "mul", "sub_a", "sub_b", "grp", "grp_a", "gen_add"):
        assert (rep / "tasks" / f"{t}.html").is_file(), t
        assert (rep / "tables/tasks" / f"{t}.csv").is_file(), t
    for t in ("add", "mul", "sub_a", "gen_add"):  # groups have no documents of their own
        assert (rep / "tasks" / f"{t}.instances.js").is_file(), t
    assert {p.name for p in (rep / "figures/heatmaps").glob("*.svg")} == {"fp32.svg", "bf16.svg"}
    assert {p.name for p in (rep / "figures/precision").glob("*.svg")} == {
        "tiny-llama.svg",
        "tiny-qwen2.svg",
    }
    assert not (run.wd / "results/.report-staging").exists()  # temp: gone once published
    # self-contained: no page, script or style refers to anything but its neighbours
    for f in rep.rglob("*"):
        if f.suffix in (".html", ".css", ".svg"):
            text = f.read_text()
            assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), f
            assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), f
    # a no-op rerun builds nothing
    assert run.planned_jobs() == set()


@pytest.mark.slow
def test_numbers_match_the_board(run):
    long = board(run)
    rep = pl.read_csv(run.wd / "results/report/data/leaderboard_report.csv")
    prim = long.filter(pl.col("primary"))
    assert rep.height == prim.select("model", "precision").unique().height == 4
    for r in rep.iter_rows(named=True):
        for t in DISPLAY:
            want = prim.filter(
                (pl.col("model") == r["model"])
                & (pl.col("precision") == r["precision"])
                & (pl.col("task") == t)
            ).row(0, named=True)
            assert r[t] == pytest.approx(want["value"], abs=1e-6)
            assert r[f"{t}_stderr"] == pytest.approx(want["stderr"], abs=1e-6)
        # chance: 3 choices in add and mul (and the group's members), 0 for generation
        # the Open LLM Leaderboard v2's normalisation: points, below chance clipped to 0
        assert r["add_norm"] == pytest.approx(max(0, (r["add"] - 1 / 3) / (2 / 3)) * 100, abs=1e-3)
        assert r["grp_norm"] == pytest.approx(max(0, (r["grp"] - 1 / 3) / (2 / 3)) * 100, abs=1e-3)
        assert r["gen_add_norm"] == pytest.approx(r["gen_add"] * 100, abs=1e-4)
        assert r["prompting"] == "raw"
        assert r["parameters"] > 0


@pytest.mark.slow
def test_per_document_answers_give_the_scores(run):
    """The drill-down's 0/1 per document averages to each score on the board."""
    long = board(run).filter(pl.col("primary") & ~pl.col("is_group"))
    seen = 0
    for f in (run.wd / "results/report/tasks").glob("*.instances.js"):
        text = f.read_text()
        payload = json.loads(text[text.index("(") + 1 : text.rindex(")")])
        for k, (model, precision) in enumerate(payload["runs"]):
            oks = [d[5][k] for d in payload["docs"]]
            value = long.filter(
                (pl.col("model") == model)
                & (pl.col("precision") == precision)
                & (pl.col("task") == payload["task"])
            )["value"][0]
            assert sum(oks) / len(oks) == pytest.approx(value)
            seen += 1
        doc = payload["docs"][0]
        if payload["kind"] == "generate_until":
            assert doc[2] and all(isinstance(a, str) for a in doc[4])  # targets, answers
            assert all(isinstance(g, str) for g in doc[6])  # generations
        else:
            assert len(doc[2]) == 3 and doc[3] in (0, 1, 2)  # choices, gold
            assert all(len(ll) == 3 for ll in doc[6])  # a log-likelihood per choice
    assert seen == 5 * 4  # (add, mul, sub_a, sub_b, gen_add) x 4 runs


@pytest.mark.slow
def test_precision_comparison(run):
    long = board(run).filter(pl.col("primary") & ~pl.col("is_group"))
    prec = pl.read_csv(run.wd / "results/report/data/precision_report.csv")
    assert prec.height == 2 * 5  # two models x five tasks, bf16 against fp32
    for r in prec.iter_rows(named=True):
        assert (r["precision"], r["reference"]) == ("bf16", "fp32")

        this = long.filter((pl.col("model") == r["model"]) & (pl.col("task") == r["task"]))
        value = dict(zip(this["precision"], this["value"]))
        assert r["delta"] == pytest.approx(value["bf16"] - value["fp32"], abs=1e-9)
        n, b, c = r["n_docs"], r["ref_only_right"], r["other_only_right"]
        assert (c - b) / n == pytest.approx(r["delta"], abs=1e-9)
        assert 0 <= r["flip_rate"] <= 1 and 0 <= r["mcnemar_p"] <= 1


def test_mcnemar_exact():
    from llmboard.results.report.stats import mcnemar_exact, paired_difference

    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    # b=10, c=2: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert 0 < mcnemar_exact(0, 3000) < 1e-300 or mcnemar_exact(0, 3000) == 0.0
    try:
        from scipy.stats import binomtest
    except ImportError:
        binomtest = None
    if binomtest is not None:
        for b, c in ((7, 19), (40, 55), (1, 0), (120, 80)):
            assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
    d, se = paired_difference([1, 1, 0, 0], [1, 0, 1, 1])
    assert d == pytest.approx(0.25) and se == pytest.approx(math.sqrt(0.9166666666666666 / 4))


# ---------------------------------------------------------------- bad input
@pytest.mark.slow
def test_unreadable_score_keeps_the_previous_report(run, tmp_path):
    from llmboard.results.report import ReportError

    ws = SimpleNamespace(wd=tmp_path / "work", tasks=run.tasks)
    shutil.copytree(run.wd / "results", ws.wd / "results", ignore=shutil.ignore_patterns("report"))
    shutil.copytree(run.wd / "resources", ws.wd / "resources")
    out = tmp_path / "report"
    build(ws, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    score = board(ws).filter(pl.col("task") == "mul")["score_file"][0]
    path = ws.wd / score
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # truncated: not JSON
    with pytest.raises(ReportError, match=re.escape(score)):
        build(ws, out)
    path.write_text(good.replace('"n": 8', '"n": 9'))  # edited after scoring: seal broken
    with pytest.raises(ReportError, match=re.escape(score)):
        build(ws, out)
    path.write_text(good)
    pq = json.loads(good)["predictions"]["parquets"][0]
    (ws.wd / pq).write_bytes(b"PAR1 not a parquet")
    with pytest.raises(ReportError, match=re.escape(pq)):
        build(ws, out)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the previous report, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no leftovers


# ---------------------------------------------------------------- snakemake --report
@pytest.mark.slow
def test_snakemake_report(run, tmp_path):
    out = tmp_path / "report.html"
    run.snakemake("--report", str(out))
    html = out.read_text()
    for text in (
        "Leaderboard",
        "Precision",
        "Tasks",
        "heatmap",
        "leaderboard_report.csv",
        "precision_report.csv",
        "tiny-llama",
        "gen_add",
        "bf16",
    ):
        assert text in html, text


# ---------------------------------------------------------------- a real browser
def chromium() -> str:
    for c in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and os.access(c, os.X_OK):
            return c
    missing_service("no Chromium found (Debian's `chromium`; `make setup-dev` installs it)")


@pytest.fixture(scope="module")
def browser():
    exe = chromium()
    try:
        from playwright import sync_api
    except ImportError:
        missing_service("Playwright for Python is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe)
        yield b
        b.close()


class Page:
    """A page that records every request it makes and every script error."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.requests, self.errors = [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def network(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file:", "blob:", "data:"))]

    def rows(self, table: str) -> list[list[str]]:
        return self.page.eval_on_selector_all(
            f"{table} > tbody > tr",
            "trs => trs.map(tr => [...tr.children].map(td => td.innerText.trim()))",
        )

    def headers(self, table: str) -> list[str]:
        return self.page.eval_on_selector_all(
            f"{table} > thead > tr:first-child > th",
            "ths => ths.map(th => th.querySelector('.dt-column-title').innerText.trim())",
        )


@pytest.mark.slow
def test_in_a_browser(run, browser):
    rep = run.wd / "results/report"
    shots = run.root / "screenshots"
    shots.mkdir(exist_ok=True)
    p = Page(browser)
    page = p.page
    page.goto((rep / "index.html").as_uri())
    page.wait_for_selector("#leaderboard[data-ready='1']", timeout=30_000)

    # every model x precision row of the board, with the same numbers
    prim = board(run).filter(pl.col("primary"))
    heads = p.headers("#leaderboard")
    assert heads[:8] == [
        "rank",
        "rank interval",
        "tied",
        "model",
        "prompting",
        "precision",
        "parameters (M)",
        "average",
    ]
    assert heads[8:] == DISPLAY
    rows = p.rows("#leaderboard")
    assert len(rows) == prim.select("model", "precision").unique().height == 4
    for cells in rows:
        r = dict(zip(heads, cells))
        for t in DISPLAY:
            want = prim.filter(
                (pl.col("model") == r["model"])
                & (pl.col("precision") == r["precision"])
                & (pl.col("task") == t)
            ).row(0, named=True)
            assert r[t] == f"{want['value']:.4f} ± {want['stderr']:.4f}"
    # ranked as the published board ranks (equal averages share a rank), in its order
    published = pl.read_csv(run.wd / "results/leaderboard.csv")
    assert [(int(c[0]), c[3], c[5]) for c in rows] == list(
        zip(published["rank"], published["model"], published["precision"])
    )
    # the rank interval and tie group are the published board's
    for c, r in zip(rows, published.iter_rows(named=True)):
        low, high = r["rank_low"], r["rank_high"]
        assert c[1] == (str(low) if low == high else f"{low}–{high}")
    page.screenshot(path=str(shots / "leaderboard.png"), full_page=True)

    # sort by a column: the model column, then descending
    title = page.locator("#leaderboard thead th").nth(3)

    def models_after_redraw(want):  # the table redraws asynchronously after a click
        for _ in range(50):
            got = [c[3] for c in p.rows("#leaderboard")]
            if got == want:
                break
            page.wait_for_timeout(100)
        return got

    names = sorted(c[3] for c in p.rows("#leaderboard"))
    title.click()
    assert models_after_redraw(names) == names
    title.click()
    assert models_after_redraw(names[::-1]) == names[::-1]

    # filter by a task: only its column, ordered by it
    page.select_option("#task-filter", "mul")
    heads = p.headers("#leaderboard")
    assert "mul" in heads and not {"add", "grp", "gen_add"} & set(heads)
    values = [float(dict(zip(heads, c))["mul"].split(" ± ")[0]) for c in p.rows("#leaderboard")]
    assert values == sorted(values, reverse=True) and len(values) == 4

    # normalised scores: chance is 0
    page.check("input[name=mode][value=norm]")
    heads = p.headers("#leaderboard")
    assert "mul (norm.)" in heads and "mul" not in heads
    for cells in p.rows("#leaderboard"):
        r = dict(zip(heads, cells))
        raw = prim.filter(
            (pl.col("model") == r["model"])
            & (pl.col("precision") == r["precision"])
            & (pl.col("task") == "mul")
        )["value"][0]
        assert float(r["mul (norm.)"].split(" ± ")[0]) == pytest.approx(
            max(0.0, (raw - 1 / 3) / (2 / 3)) * 100, abs=1e-2
        )

    # the drill-down: a task's page, its instances loaded on demand
    page.click("a[href='tasks/add.html']")
    page.wait_for_selector("#instances")
    assert page.locator("#instances-table tbody tr").count() == 0  # not loaded yet
    page.click("#instances summary")
    page.wait_for_selector("#instances-table[data-ready='1']", timeout=30_000)
    docs = p.rows("#instances-table")
    assert len(docs) == 8 and [int(c[1]) for c in docs] == list(range(8))
    assert all(c[4].endswith("/4") for c in docs)  # right out of four runs
    page.locator("#instances-table tbody td.dt-control").first.click()
    page.wait_for_selector("#instances-table table.runs tbody tr")
    runs = p.rows("#instances-table table.runs")
    assert len(runs) == 4 and {r[0] for r in runs} == {"tiny-llama", "tiny-qwen2"}
    assert "What is 1 and 1?" in page.inner_text("#instances-table .child pre")
    page.screenshot(path=str(shots / "drilldown.png"), full_page=True)
    page.locator("#instances-table tbody td.dt-control").first.click()  # close it again
    page.check("#only-models-disagree")
    shown = p.rows("#instances-table")
    want = sum(1 for c in docs if c[6] == "yes")
    assert len(shown) == want or (want == 0 and len(shown) == 1)  # 1: "no matching records"
    assert want == 0 or all(c[6] == "yes" for c in shown)

    # a generation task's drill-down: generation, extracted answer, target
    page.goto((rep / "tasks/gen_add.html").as_uri())
    page.click("#instances summary")
    page.wait_for_selector("#instances-table[data-ready='1']", timeout=30_000)
    assert len(p.rows("#instances-table")) == 6
    page.locator("#instances-table tbody td.dt-control").first.click()
    heads = p.headers("#instances-table table.runs")
    assert heads == ["model", "precision", "correct", "extracted answer", "generation"]

    # compare two rows: each task and the average, as comparisons.parquet says
    page.goto((rep / "compare.html").as_uri())
    page.wait_for_selector("#compare-table[data-pair]")
    comp = pl.read_parquet(run.wd / "results/comparisons.parquet")
    pick = page.locator("#compare-a option:checked").text_content()
    a, b = pick, page.locator("#compare-b option:checked").text_content()
    assert a != b
    assert page.locator("#compare-table").get_attribute("data-pair") == f"{a} | {b}"
    shown = p.rows("#compare-table")
    assert [c[0] for c in shown] == ["average", *sorted(DISPLAY)]
    assert page.locator("#compare-forest svg circle").count() == len(DISPLAY) + 1

    def kept(task, x, y):
        r = comp.filter(
            (pl.col("task") == task)
            & (pl.format("{} · {}", "model_a", "precision_a") == x)
            & (pl.format("{} · {}", "model_b", "precision_b") == y)
        )
        return r.row(0, named=True) if r.height else None

    for c in shown:
        r = kept(c[0], a, b)
        sign = 1
        if r is None:
            r, sign = kept(c[0], b, a), -1
        assert float(c[1].rstrip(" *")) == pytest.approx(sign * r["diff"], abs=5e-5)
        lo, hi = sorted(sign * r[k] for k in ("ci_low", "ci_high"))
        # drawn as diff -+ z * se from the pair's file: the board's interval
        assert [float(x) for x in c[2].strip("[]").split(", ")] == pytest.approx(
            [lo, hi], abs=1.5e-4
        )
        assert c[1].endswith("*") == r["significant"]
        assert float(c[4]) == pytest.approx(r["p_adjusted"], rel=1e-2)
    # the other order flips every difference
    page.select_option("#compare-a", label=b)
    page.select_option("#compare-b", label=a)
    page.wait_for_selector(f'#compare-table[data-pair="{b} | {a}"]')
    flipped = p.rows("#compare-table")
    for c, f in zip(shown, flipped):
        assert float(f[1].rstrip(" *")) == pytest.approx(-float(c[1].rstrip(" *")), abs=1e-4)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)

    for other in ("precision.html", "tasks.html", "cost.html", "provenance.html"):
        page.goto((rep / other).as_uri())
        page.wait_for_selector("table.dataTable tbody tr", timeout=30_000)
    assert "pass" in page.inner_text("#provenance-table")
    page.screenshot(path=str(shots / "provenance.png"), full_page=True)
    print(f"screenshots in {shots}")
    assert p.errors == []
    assert p.network() == [], p.network()  # nothing but the files beside the page


@pytest.mark.slow
def test_ten_thousand_documents_stay_responsive(browser, tmp_path):
    """A 10,000-document task: its page opens at once and its drill-down (loaded on
    demand, paged) shows its first rows within seconds."""
    import time

    from bench.report_scale import build_board, time_report

    work = tmp_path / "work"
    display = build_board(work, n_models=1, n_tasks=1, n_prec=2, n_docs=10_000, n_gen=0)
    out = tmp_path / "report"
    time_report(work, out, display, work / "tasks", "fast")
    page_file = out / "tasks" / f"{display[0]}.html"
    assert page_file.stat().st_size < 200_000  # the documents are not in the page
    p = Page(browser)
    t0 = time.monotonic()
    p.page.goto(page_file.as_uri())
    p.page.click("#instances summary")
    p.page.wait_for_selector("#instances-table[data-ready='1']", timeout=60_000)
    seconds = time.monotonic() - t0
    assert len(p.rows("#instances-table")) == 25  # one page of rows in the DOM
    assert "10,000" in p.page.inner_text("#instances .dt-info")
    p.page.click("#instances .dt-paging button[data-dt-idx='last']")
    assert p.rows("#instances-table")[-1][1] == "9999"
    print(f"10,000 documents: page {page_file.stat().st_size} bytes, first rows in {seconds:.1f} s")
    assert seconds < 15, seconds
    assert p.errors == [] and p.network() == []
