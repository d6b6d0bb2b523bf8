"""``llmboard verify``: prove every published number from the files on disk.

The chain, checked link by link, every failing file named:

    local source -> fetched checkpoint (fetch.json) -> converted model (manifest.json)
      -> prediction shards (each sidecar records its parquet's sha256 and the weights')
      -> score file (sealed with its own content hash; names its prediction files)
      -> leaderboard rows (each names its score file)
      -> the wide board beside it (.csv, .md: what ``make leaderboard`` prints), rebuilt
         from those rows and compared cell by cell

The full check recomputes every score from its predictions, re-hashes weights and
checkpoints, and re-renders task files and documents. ``fast`` checks file sizes and
hashes only: score seals, prediction files against their sidecars, leaderboard rows
against score files, the wide board against those rows, weight files present; nothing
recomputed or re-read in full.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..workflow import layout


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    scores: int = 0
    prediction_files: int = 0
    models: int = 0
    board_rows: int = 0
    seconds: float = 0.0

    def add(self, problem: str) -> None:
        self.problems.append(problem)


def score_files(results: Path) -> list[Path]:
    return sorted(
        p for p in (results / "scores").rglob("*.json") if p.parent.name != layout.RECEIPT_FOLDER
    )


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# not task columns: the CSV's and the markdown's names of the rank interval and tie group
WIDE_FIXED = (
    "rank",
    "rank_low",
    "rank_high",
    "tie_group",
    "rank interval",
    "tied",
    "model",
    "prompting",
    "precision",
    "average",
)
MAX_CELLS = 10  # differing cells named per wide board file


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _md_rows(text: str) -> list[list[str]]:
    """Table lines as their cells; any other line as one cell."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and line.endswith(" |"):
            rows.append(line[2:-2].split(" | "))
        else:
            rows.append([line])
    return rows


def _display_of(head: list[str]) -> list[str]:
    """A wide board's task columns, from its header."""
    return [c for c in head if c not in WIDE_FIXED and not c.endswith("_stderr")]


def _table_problems(path: Path, got: list[list[str]], want: list[list[str]]) -> list[str]:
    """Each cell of the published table ``got`` that differs from the rebuilt ``want``,
    named by file, row (line, model/precision) and column."""
    out = []
    head = want[0] if want else []
    if got[:1] != want[:1]:
        return [f"{path}: header {got[0] if got else []} differs, its score files give {head}"]
    where = {c: head.index(c) for c in ("model", "precision") if c in head}

    def row_name(i: int, row: list[str]) -> str:
        key = "/".join(row[j] for j in where.values() if j < len(row))
        return f"line {i + 1}" + (f" ({key})" if key else "")

    for i, (g, w) in enumerate(zip(got, want)):
        if g == w:
            continue
        if len(g) != len(w):
            out.append(
                f"{path}: {row_name(i, g)} has {len(g)} cells, its score files give {len(w)}: {w}"
            )
            continue
        for col, a, b in zip(head if len(w) == len(head) else [""] * len(w), g, w):
            if a != b:
                out.append(
                    f"{path}: {row_name(i, g)}{', column ' + col if col else ''}: "
                    f"{a!r}, its score files give {b!r}"
                )
    if len(got) != len(want):
        out.append(f"{path}: {len(got)} lines, its score files give {len(want)}")
    if len(out) > MAX_CELLS:
        out = out[:MAX_CELLS] + [f"{path}: and {len(out) - MAX_CELLS} more differences"]
    return out


def _read_json(path: Path, what: str, report: Report) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        report.add(f"{path}: {what} not readable: {e}")
        return None


class _Checker:
    def __init__(self, results: Path, tasks_dir: Path | None, fast: bool):
        from ..tasks.definitions import find_task_files

        self.results = results
        self.workdir = results.parent  # files name each other relative to the run's folder
        self.fast = fast
        self.index = find_task_files(tasks_dir) if tasks_dir is not None else {}
        self.report = Report()
        self.manifests: dict[Path, dict | None] = {}  # model folder -> manifest, once checked
        self.fingerprints: dict[tuple, str] = {}
        self.scores: dict[str, dict] = {}  # score file -> content, once proven

    def path(self, p: str) -> Path:
        return self.workdir / p  # an absolute path stays as it is

    # ------------------------------------------------------------ scores
    def check_score(self, sp: Path) -> None:
        from ..results.leaderboard import LeaderboardError, read_score

        report = self.report
        try:
            s = read_score(sp)  # the leaderboard's own reader: unreadable or unsealed is refused
        except LeaderboardError as e:
            report.add(str(e))
            return
        named = s.get("predictions")
        if not named:
            report.add(
                f"{sp}: names no prediction files (written by an older llmboard); "
                "delete it and rerun to re-score"
            )
            return
        parquets = [self.path(p) for p in named["parquets"]]
        infos = [self.path(p) for p in named["infos"]]
        metas = [self.check_prediction(pq, info) for pq, info in zip(parquets, infos)]
        if any(m is None for m in metas):
            report.add(f"{sp}: computed from predictions that fail the check above")
            return
        prov = s["provenance"]
        if any(m["checkpoint_sha256"] != prov["checkpoint_sha256"] for m in metas):
            report.add(f"{sp}: its predictions come from other weights than it records")
        self.check_model(self.path(metas[0]["model_dir"]), prov["checkpoint_sha256"], sp)
        if not self.fast:
            self.check_recomputed(sp, s, parquets, infos)
            self.check_task(sp, metas[0], prov)
        self.scores[str(sp.resolve())] = s

    def check_prediction(self, parquet: Path, info: Path) -> dict | None:
        """The sidecar, when the parquet is the one it recorded (scoring's own check)."""
        from ..tasks.errors import ScoreError
        from ..tasks.scoring import check_prediction_file

        self.report.prediction_files += 1
        meta = _read_json(info, "prediction sidecar", self.report)
        if meta is None:
            return None
        if "parquet_sha256" not in meta:  # scoring accepts these; a proof cannot
            self.report.add(f"{info}: records no sha256 of {parquet.name} (older llmboard)")
            return None
        try:
            check_prediction_file(str(parquet), meta, str(info))
        except ScoreError as e:
            self.report.add(str(e))
            return None
        return meta

    def check_recomputed(self, sp: Path, s: dict, parquets, infos) -> None:
        """The score's numbers from its predictions again. A code task's programs are not
        run again: their recorded outcomes are used once each is shown to be the program
        its prediction builds (sha256); a math task's checks are run again."""
        from ..tasks.errors import ScoreError
        from ..tasks.scoring import compute_score, recorded_details, scorer_version

        try:
            again = compute_score(
                [str(p) for p in parquets],
                [str(p) for p in infos],
                model=s["model"],
                metrics=list(s["metrics"]),
                primary_metric=s["primary_metric"],
                code=s.get("code_execution"),
                recorded=recorded_details(s, code_only=True),
            )
        except ScoreError as e:
            self.report.add(f"{sp}: cannot be recomputed: {e}")
            return
        scored_by = s["provenance"].get("scorer_version")
        for metric, v in s["metrics"].items():
            got = again["metrics"][metric]
            if not (_same(got["value"], v["value"]) and _same(got["stderr"], v["stderr"])):
                note = (
                    ""
                    if scored_by == scorer_version()
                    else (f" (scored by scorer {scored_by}, this is {scorer_version()})")
                )
                self.report.add(
                    f"{sp}: {metric} = {v['value']!r} ± {v['stderr']!r}, recomputed "
                    f"from its predictions: {got['value']!r} ± {got['stderr']!r}{note}"
                )
        if again["n"] != s["n"]:
            self.report.add(f"{sp}: n = {s['n']}, recomputed: {again['n']}")

    # ------------------------------------------------------------ weights and checkpoints
    def check_model(self, model_dir: Path, checkpoint_sha256: str, sp: Path) -> None:
        if model_dir not in self.manifests:  # each model's chain is checked once
            self.manifests[model_dir] = self._model_chain(model_dir)
            self.report.models += 1
        manifest = self.manifests[model_dir]
        if manifest and manifest["checkpoint_sha256"] != checkpoint_sha256:
            self.report.add(
                f"{sp}: scored with weights {checkpoint_sha256}, "
                f"{model_dir} now holds {manifest['checkpoint_sha256']}"
            )

    def _check_files(self, folder: Path, recorded: dict[str, str], record: str) -> None:
        """Every file ``record`` lists is there and (full check) still has its sha256."""
        from ..hashing import sha256_file

        for name, h in recorded.items():
            f = folder / name
            if not f.exists():
                self.report.add(f"{f}: missing (listed in {record})")
            elif not self.fast and sha256_file(f) != h:
                self.report.add(f"{f}: sha256 differs from {record}")

    def _model_chain(self, model_dir: Path) -> dict | None:
        """The model's manifest, after checking its files and the checkpoint it came from."""
        manifest = _read_json(model_dir / "manifest.json", "manifest", self.report)
        if manifest is None:
            return None
        self._check_files(model_dir, manifest["files"], "its manifest")
        # resources/models/{model}/{key} was converted from resources/checkpoints/{model}/{key}
        ckpt = self.workdir / layout.fill(
            layout.CHECKPOINT_DIR, model=model_dir.parent.name, key=model_dir.name
        )
        self._checkpoint_chain(ckpt)
        return manifest

    def _checkpoint_chain(self, ckpt: Path) -> None:
        from ..checkpoints.sources import Source, SourceError

        fetched = _read_json(ckpt / "fetch.json", "fetch record", self.report)
        if fetched is None:
            return
        self._check_files(ckpt, fetched["files"], "fetch.json (changed after fetching)")
        src = Source(fetched["source"]["kind"], fetched["source"]["location"])
        if src.is_on_disk:
            try:
                path = src.local_path(self.workdir)
            except SourceError as e:
                self.report.add(f"{ckpt}: its source is gone: {e}")
                return
            self._source_unchanged(path, fetched["files"], ckpt)

    def _source_unchanged(self, path: Path, recorded: dict, ckpt: Path) -> None:
        from ..checkpoints.identity import content_files
        from ..hashing import sha256_file

        now = content_files(path)
        changed = sorted(set(now) ^ set(recorded))
        for name in sorted(set(now) & set(recorded)):
            f = now[name]
            if self.fast:
                if f.stat().st_size != (ckpt / name).stat().st_size:
                    changed.append(name)
            elif sha256_file(f) != recorded[name]:
                changed.append(name)
        if changed:
            self.report.add(
                f"{path}: local source changed since it was fetched into {ckpt} "
                f"({', '.join(changed[:5])}); the next run evaluates it again"
            )

    # ------------------------------------------------------------ tasks and documents
    def check_task(self, sp: Path, info: dict, prov: dict) -> None:
        from ..settings import task_override_fields
        from ..tasks.definitions import Task, load_task
        from ..tasks.documents import dataset_fingerprint, load_docs
        from ..tasks.errors import TaskError

        report = self.report
        task_file = self.index.get(info["task"])
        task = Task(info["task"], info["task_definition"], task_file or Path("."))
        if task.hash != prov["task_hash"]:
            report.add(
                f"{sp}: task definition in predictions hashes to {task.hash}, "
                f"score says {prov['task_hash']}"
            )
        if task_file is not None:
            overrides = {k: info["task_definition"].get(k) for k in task_override_fields()}
            try:
                current = load_task(task_file, overrides)
            except TaskError as e:
                report.add(f"{sp}: {e}")
            else:
                if current.hash != prov["task_hash"]:
                    report.add(
                        f"{sp}: stale: {task_file} now hashes to {current.hash}, "
                        f"scored with {prov['task_hash']}"
                    )
        key = (task_file, task.hash)
        try:
            if key not in self.fingerprints:
                self.fingerprints[key] = dataset_fingerprint(load_docs(task))
        except Exception as e:  # noqa: BLE001 - a dataset that cannot be read is a finding too
            report.add(f"{sp}: dataset not readable: {e}")
            return
        if self.fingerprints[key] != prov["dataset_fingerprint"]:
            report.add(
                f"{sp}: stale: dataset fingerprint is now {self.fingerprints[key]}, "
                f"scored with {prov['dataset_fingerprint']}"
            )

    # ------------------------------------------------------------ leaderboards
    def check_board(self, board: Path) -> None:
        import polars as pl

        from ..results.leaderboard import KEYS, LeaderboardError, build_long
        from ..tasks.definitions import group_spec, is_group

        report = self.report
        try:
            long = pl.read_parquet(board)
        except Exception as e:  # noqa: BLE001 - polars' errors do not name the file
            report.add(f"{board}: not readable: {e}")
            return
        if "score_file" not in long.columns:
            report.add(f"{board}: rows name no score files (written by an older llmboard)")
            return
        report.board_rows += long.height
        files = sorted(set(long.filter(~pl.col("is_group"))["score_file"].to_list()))
        for f in files:
            if str(self.path(f).resolve()) not in self.scores:
                report.add(f"{board}: built from {f}, which is missing or fails the checks")
        names = set(long.filter(pl.col("is_group"))["task"].to_list())
        groups = {
            name: group_spec(path)
            for name, path in self.index.items()
            if name in names and is_group(path)
        }
        prompting = None
        if "prompting" in long.columns:
            prompting = dict(long.select("model", "prompting").unique().iter_rows())
        try:
            again = build_long([str(self.path(f)) for f in files], groups, prompting)
        except (LeaderboardError, ValueError) as e:
            report.add(f"{board}: cannot be rebuilt from its score files: {e}")
            return
        self.check_wide(board, long, again, groups)
        if not groups:  # without the group files, only the task rows can be proven
            long = long.filter(~pl.col("is_group"))
        cols = [*KEYS, "value", "stderr", "n"]
        joined = long.select(cols).join(
            again.select(cols), on=KEYS, how="full", suffix="_proven", nulls_equal=True
        )
        for r in joined.iter_rows(named=True):
            if r["value"] is None or r["value_proven"] is None:
                what = "not in its score files" if r["value_proven"] is None else "missing"
                report.add(
                    f"{board}: row {r['model']}/{r['precision']}/{r['task']}/{r['metric']} {what}"
                )
            elif not (
                _same(r["value"], r["value_proven"])
                and _same(r["stderr"], r["stderr_proven"])
                and r["n"] == r["n_proven"]
            ):
                report.add(
                    f"{board}: row {r['model']}/{r['precision']}/{r['task']}/"
                    f"{r['metric']} = {r['value']!r}, its score files give "
                    f"{r['value_proven']!r}"
                )

    def check_wide(self, board: Path, published, proven, groups: dict) -> None:
        """The board's .csv and .md, rebuilt from its proven rows (``proven``: rebuilt from
        the score files; group rows from ``published`` when the group files are not
        known), equal cell by cell; the task columns are those of the published header,
        and every top-level task of the board must be one of them."""
        import polars as pl

        from ..results.leaderboard import render_board
        from ..workflow.layout import COMPARISONS_TABLE

        texts = {}
        for ext in (".csv", ".md"):
            f = board.with_suffix(ext)
            if f.exists():
                try:
                    texts[ext] = f.read_text(encoding="utf-8")
                except (OSError, ValueError) as e:
                    self.report.add(f"{f}: not readable: {e}")
        if not texts:
            return
        tables = {}
        for ext, text in texts.items():
            try:
                tables[ext] = _csv_rows(text) if ext == ".csv" else _md_rows(text)
            except csv.Error as e:
                self.report.add(f"{board.with_suffix(ext)}: not readable: {e}")
        if not tables:
            return
        first = next(iter(tables))
        display = _display_of(tables[first][0] if tables[first] else [])
        if not display or len(set(display)) != len(display):
            self.report.add(
                f"{board.with_suffix(first)}: task columns {display}: none, or one twice"
            )
            return
        if not groups:
            # the published rows carry the rank intervals too: only the proven columns
            groups_rows = published.filter(pl.col("is_group")).select(proven.columns)
            proven = pl.concat([proven, groups_rows], how="vertical_relaxed")
        tasks = set(proven["task"].to_list())
        for t in display:
            if t not in tasks:
                self.report.add(f"{board.with_suffix(first)}: column {t} is no task of {board}")
        # a task column dropped from both files would hide a missing task; the top-level
        # tasks are known where the group files are, or where the board has no group
        if groups or not published["is_group"].any():
            inner = {s for g in groups.values() for s in g["subgroups"]}
            inner |= {t for g in groups.values() for ms in g["subgroups"].values() for t in ms}
            for t in sorted(tasks - inner - set(display)):
                self.report.add(
                    f"{board.with_suffix(first)}: has no column for {t}, a task of {board}"
                )
        comparisons = board.with_name(COMPARISONS_TABLE + ".parquet")
        stats = _statistics_settings(comparisons) if comparisons.exists() else None
        try:
            rebuilt = render_board(proven, display, groups, stats)
        except Exception as e:  # noqa: BLE001 - named with the file, like any other finding
            self.report.add(f"{board.with_suffix(first)}: cannot be rebuilt: {e}")
            return
        want = {".csv": _csv_rows(rebuilt["csv"]), ".md": _md_rows(rebuilt["md"])}
        for ext, got in tables.items():
            for problem in _table_problems(board.with_suffix(ext), got, want[ext]):
                self.report.add(problem)
        if stats is not None:
            self.check_comparisons(comparisons, rebuilt["comparisons"])

    def check_comparisons(self, path: Path, proven) -> None:
        """comparisons.parquet: every pair's numbers recomputed from the score files'
        per-document values (the bootstrap is seeded: the same draws)."""
        import polars as pl

        try:
            got = pl.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - polars' errors do not name the file
            self.report.add(f"{path}: not readable: {e}")
            return
        if proven is None:
            if got.height:
                self.report.add(f"{path}: {got.height} pair(s), its board has fewer than 2 rows")
            return
        keys = ["task", "model_a", "precision_a", "model_b", "precision_b"]
        cols = ("diff", "se", "p", "p_adjusted")
        j = got.join(proven, on=keys, how="full", suffix="_proven", nulls_equal=True)

        def same(c):  # equal, or NaN on both sides (_same, column-wise)
            a, b = pl.col(c), pl.col(f"{c}_proven")
            return (a == b).fill_null(False) | (a.is_nan() & b.is_nan()).fill_null(False)

        # compared column-wise: only the pairs that differ are named one by one
        # (a 300-row board has 2.7 million pairs)
        bad = j.filter(
            pl.col("diff").is_null()
            | pl.col("diff_proven").is_null()
            | ~pl.all_horizontal(*(same(c) for c in cols))
        )
        for r in bad.iter_rows(named=True):
            name = f"{r['task']}: {r['model_a']}·{r['precision_a']} vs {r['model_b']}·{r['precision_b']}"
            if r["diff"] is None or r["diff_proven"] is None:
                self.report.add(f"{path}: pair {name} missing on one side")
                continue
            for col in cols:
                if not _same(r[col], r[f"{col}_proven"]):
                    self.report.add(
                        f"{path}: pair {name}: {col} = {r[col]!r}, its score files give "
                        f"{r[col + '_proven']!r}"
                    )


def _statistics_settings(comparisons: Path) -> dict | None:
    """The statistics settings a board's comparisons were computed with (their columns)."""
    import polars as pl

    try:
        c = pl.read_parquet(comparisons, columns=["level", "adjust", "bootstrap", "seed"])
    except Exception:  # noqa: BLE001 - check_comparisons names the problem
        return {}
    if not c.height:
        return {}
    return {k: c[k][0] for k in c.columns}


def _board_score_files(board: Path, workdir: Path) -> list[Path] | None:
    """The score files a board's rows name (None when the board cannot say)."""
    import polars as pl

    try:
        files = pl.read_parquet(board, columns=["score_file", "is_group"])
    except Exception:  # noqa: BLE001 - check_board names the problem
        return None
    names = files.filter(~pl.col("is_group"))["score_file"].unique().to_list()
    return sorted(workdir / f for f in names if f)


def verify(
    results: Path, tasks_dir: Path | None = None, *, fast: bool = False, everything: bool = False
) -> Report:
    """Every problem found, one line each naming the file; none when all is proven.

    By default the published board (``results/leaderboard.parquet``) and the chain of
    every number on it; ``everything``: every score file under ``results/scores`` and
    every board under ``results/boards`` too (superseded ones included)."""
    t0 = time.monotonic()
    c = _Checker(Path(results), tasks_dir, fast)
    published = c.results / f"{layout.LEADERBOARD_TABLE}.parquet"
    boards = [published] if published.exists() else []
    named = _board_score_files(published, c.workdir) if boards else None
    if everything or named is None:
        scores = score_files(c.results)
        boards += sorted((c.results / "boards").glob(f"*/{layout.LEADERBOARD_TABLE}.parquet"))
    else:
        scores = [p for p in named if p.exists()]  # a missing one: check_board names it
    c.report.scores = len(scores)
    if not scores:
        c.report.add(f"{results}: no score files to verify")
    for sp in scores:
        c.check_score(sp)
    for board in boards:
        c.check_board(board)
    c.report.seconds = time.monotonic() - t0
    return c.report
