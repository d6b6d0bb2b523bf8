/* llmboard report: the leaderboard's switches and the per-instance drill-down.
 * Tables are DataTables (the bundle itables ships, loaded by assets/itables.js as a
 * module from a blob: URL); this file only drives its API. Nothing is fetched. */
(function () {
  "use strict";
  const llmboard = (window.llmboard = window.llmboard || {});

  function dataTables() {
    // assets/itables.js sets window[<itables version key>] to the bundle's module promise
    return window[document.body.dataset.itables];
  }

  async function apiOf(el) {
    const mod = await dataTables();
    const DataTable = mod.default;
    while (!DataTable.isDataTable(el)) await new Promise((r) => setTimeout(r, 25));
    return new DataTable.Api(el);
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // value ± stderr, the stderr read from another (hidden) column of the row
  llmboard.pm = function (d, type, row, seIndex) {
    if (type !== "display" || d === null || d === undefined) return d;
    const se = row[seIndex];
    return Number(d).toFixed(4) + (se === null || se === undefined ? "" : " ± " + Number(se).toFixed(4));
  };
  // a task's name as a link to its page (rendered here: the data stays plain)
  llmboard.link = function (d, type, prefix) {
    if (type !== "display" || !d) return d;
    return '<a href="' + prefix + encodeURIComponent(d) + '.html">' + esc(d) + "</a>";
  };
  // `llmboard verify`'s verdict on a score: "pass", or the first problem found
  llmboard.status = function (d, type) {
    if (type !== "display" || !d) return d;
    return d === "pass" ? '<span class="ok">pass</span>' : '<span class="fail">' + esc(d) + "</span>";
  };
  llmboard.fixed = function (d, type, digits) {
    if (type !== "display" || d === null || d === undefined) return d;
    return Number(d).toFixed(digits);
  };

  // ---------------------------------------------------------------- leaderboard
  async function leaderboard() {
    const meta = document.getElementById("leaderboard-columns");
    if (!meta) return;
    const columns = JSON.parse(meta.textContent);
    const table = document.getElementById("leaderboard");
    const api = await apiOf(table);
    const controls = document.getElementById("leaderboard-controls");
    const state = { mode: "raw", task: "" };
    function apply() {
      columns.forEach((c, i) => {
        let show = !c.hidden && (c.mode === null || c.mode === state.mode);
        if (show && c.task !== null && state.task && c.task !== state.task) show = false;
        if (api.column(i).visible() !== show) api.column(i).visible(show, false);
      });
      if (state.task) {
        const i = columns.findIndex((c) => c.task === state.task && c.mode === state.mode);
        api.order([[i, "desc"]]);
      } else {
        const i = columns.findIndex((c) => c.rank && c.mode === state.mode);
        api.order([[i, "asc"]]);
      }
      api.columns.adjust().draw(false);
      table.dataset.mode = state.mode;
      table.dataset.task = state.task;
    }
    controls.querySelectorAll("input[name=mode]").forEach((el) =>
      el.addEventListener("change", () => { state.mode = el.value; apply(); }));
    document.getElementById("task-filter").addEventListener("change", (e) => { state.task = e.target.value; apply(); });
    apply();
    table.dataset.ready = "1";
  }

  // ---------------------------------------------------------------- drill-down
  let pending = null;
  llmboard.receiveInstances = function (payload) {
    if (pending) pending(payload);
  };

  function loadInstances(src) {
    return new Promise((resolve, reject) => {
      pending = resolve;
      const s = document.createElement("script");
      s.src = src;
      s.onerror = () => reject(new Error("cannot load " + src));
      document.head.appendChild(s);
    });
  }

  function runTable(payload, doc) {
    const [, , choices, gold, answers, oks, details, , , checks] = doc;
    const gen = payload.kind === "generate_until";
    // math and code tasks: what decided each score (the checks, the program's outcome)
    const checked = gen && (checks || []).some((c) => c !== null);
    if (payload.kind === "loglikelihood_rolling") {  // perplexity: a log-likelihood per run
      const rows = payload.runs.map((run, r) => [run[0], run[1], answers[r] === null ? "" : answers[r]]);
      return { rows, cols: [{ title: "model" }, { title: "precision" }, { title: "log-likelihood", className: "num" }] };
    }
    const rows = payload.runs.map((run, r) => {
      const ok = oks[r];
      const base = [run[0], run[1], ok === null ? "" : ok ? "✓" : "✗"];
      if (gen) {
        const row = base.concat([answers[r] === null ? "" : answers[r], details[r] === null ? "" : details[r]]);
        return checked ? row.concat([checks[r] === null ? "" : checks[r]]) : row;
      }
      const lls = details[r] || [];
      const pick = answers[r];
      return base.concat([pick === null ? "" : choices[pick]], choices.map((_, k) => (lls[k] === undefined ? null : lls[k])), [pick]);
    });
    const cols = [{ title: "model" }, { title: "precision" }, { title: "correct" }];
    if (gen) {
      cols.push({ title: "extracted answer", render: (d, t) => (t === "display" ? esc(d) : d) });
      cols.push({ title: "generation", render: (d, t) => (t === "display" ? "<pre>" + esc(d) + "</pre>" : d) });
      if (checked) cols.push({ title: "check", render: (d, t) => (t === "display" ? esc(d) : d) });
    } else {
      cols.push({ title: "answer", render: (d, t) => (t === "display" ? esc(d) : d) });
      choices.forEach((c, k) => cols.push({
        title: (k === gold ? "★ " : "") + "ll(" + k + ")",
        className: "num",
        render: (d, t, row) => (t === "display" && d !== null ? (row[row.length - 1] === k ? "<b>" + d.toFixed(4) + "</b>" : d.toFixed(4)) : d),
      }));
      cols.push({ title: "pick", visible: false });
    }
    return { rows, cols };
  }

  function childHtml(payload, doc) {
    const [id, prompt, choices, gold] = doc;
    const gen = payload.kind === "generate_until";
    let html = '<div class="child">';
    if (payload.kind === "multiple_input") {
      html += "<h4>continuation (shared by every choice)</h4><pre>" + esc(prompt) + "</pre>";
      html += "<h4>choices (each its own context)</h4><ol start=\"0\">" + choices.map((c, k) =>
        '<li class="' + (k === gold ? "gold" : "") + '"><pre>' + esc(c) + "</pre></li>").join("") + "</ol>";
    } else {
      html += "<h4>" + (payload.kind === "loglikelihood_rolling" ? "text" : "prompt") + " (doc " + id + ")</h4><pre>" + esc(prompt) + "</pre>";
      if (payload.kind === "loglikelihood_rolling") html += "";
      else if (gen) html += "<h4>target" + (choices.length > 1 ? "s (any)" : "") + "</h4><pre>" + choices.map(esc).join("\n") + "</pre>";
      else html += "<h4>choices (★ gold)</h4><ol start=\"0\">" + choices.map((c, k) =>
        '<li class="' + (k === gold ? "gold" : "") + '">' + (k === gold ? "★ " : "") + esc(c) + "</li>").join("") + "</ol>";
    }
    html += "<h4>runs</h4><table class=\"display compact runs\" style=\"width:100%\"></table></div>";
    return html;
  }

  async function instances(details) {
    const mod = await dataTables();
    const DataTable = mod.default;
    const payload = await loadInstances(details.dataset.src);
    const gen = payload.kind === "generate_until";
    const n = payload.runs.length;
    const rows = payload.docs.map((d) => {
      const oks = d[5];
      const right = oks.reduce((a, b) => a + (b || 0), 0);
      const target = gen ? d[2].join(" | ") : d[3] === null ? "" : d[2][d[3]];
      return [d[0], d[1], target, right, d[7] ? "yes" : "no", d[8] ? "yes" : "no", d];
    });
    const table = document.getElementById("instances-table");
    const api = new DataTable(table, {
      data: rows,
      deferRender: true,
      pageLength: 25,
      lengthMenu: [10, 25, 100, 500],
      order: [[1, "asc"]],
      columns: [
        { className: "dt-control", orderable: false, data: null, defaultContent: "", searchable: false },
        { title: "doc", data: 0, className: "num" },
        { title: payload.kind === "multiple_input" ? "continuation" : "prompt", data: 1, className: "prompt",
          render: (d, t) => (t === "display" ? esc(d.length > 220 ? "…" + d.slice(-220) : d) : d) },
        { title: gen ? "target" : "gold", data: 2, render: (d, t) => (t === "display" ? esc(d.length > 120 ? d.slice(0, 120) + "…" : d) : d) },
        { title: "right", data: 3, className: "num", render: (d, t) => (t === "display" ? d + "/" + n : d) },
        { title: "precisions disagree", data: 4 },
        { title: "models disagree", data: 5 },
      ],
    });
    const filters = [["only-precisions-disagree", 5], ["only-models-disagree", 6]];
    for (const [id, col] of filters) {
      document.getElementById(id).addEventListener("change", (e) => {
        api.column(col).search(e.target.checked ? (d) => d === "yes" : "").draw();
      });
    }
    table.querySelector("tbody").addEventListener("click", (e) => {
      const td = e.target.closest("td.dt-control");
      if (!td) return;
      const tr = td.closest("tr");
      const row = api.row(tr);
      if (row.child.isShown()) {
        row.child.hide();
        tr.classList.remove("shown");
        return;
      }
      const doc = row.data()[6];
      row.child(childHtml(payload, doc)).show();
      tr.classList.add("shown");
      const { rows: runRows, cols } = runTable(payload, doc);
      const el = tr.nextElementSibling.querySelector("table.runs");
      new DataTable(el, { data: runRows, columns: cols, paging: runRows.length > 25, searching: runRows.length > 25, info: false, order: [] });
    });
    table.dataset.ready = "1";
  }

  // ---------------------------------------------------------------- compare two rows
  // Row i's pairs with every later row j are a script of their own (compare/{i}.js),
  // loaded when a pair needs it and kept; an entry [j, task, diff, se, p, p adjusted,
  // documents, significant] holds row j's value minus row i's: the other order flips
  // the sign. The interval is diff -+ z * se, as the board computed it.
  // Everything from the data is set as text (textContent), never as markup.
  const pairFiles = {};
  const pairWaiting = {};
  llmboard.receivePairs = function (i, entries) {
    pairFiles[i] = entries;
    if (pairWaiting[i]) pairWaiting[i](entries);
  };

  function loadPairs(src, i) {
    if (pairFiles[i]) return Promise.resolve(pairFiles[i]);
    return new Promise((resolve, reject) => {
      pairWaiting[i] = resolve;
      const s = document.createElement("script");
      s.src = src + i + ".js";
      s.onerror = () => reject(new Error("cannot load " + s.src));
      document.head.appendChild(s);
    });
  }

  async function pairRows(meta, a, b) {
    if (a === b) return [];
    const lo = Math.min(a, b), hi = Math.max(a, b), sign = a < b ? 1 : -1;
    const entries = await loadPairs(meta.src, lo);
    const out = [];
    for (const [j, t, d, se, pv, padj, n, sig] of entries) {
      if (j !== hi) continue;
      const diff = sign * d, half = meta.z * se;
      out.push({ task: meta.tasks[t], diff, lo: diff - half, hi: diff + half, pv, padj, sig: sig === 1, test: meta.tests[t], n });
    }
    return out;  // the files keep the page's order: the average first, then the tasks
  }

  function forest(rows) {
    const ns = "http://www.w3.org/2000/svg";
    const w = 640, rowH = 22, left = 200, right = 20, top = 10;
    const h = top * 2 + rowH * rows.length + 20;
    let lo = Math.min(0, ...rows.map((r) => r.lo)), hi = Math.max(0, ...rows.map((r) => r.hi));
    if (hi - lo < 1e-9) [lo, hi] = [-0.01, 0.01];  // identical rows: an axis around 0
    const span = hi - lo;
    const x = (v) => left + ((v - lo) / span) * (w - left - right);
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "forest plot: b - a per task with its interval");
    function el(name, attrs, text) {
      const e = document.createElementNS(ns, name);
      for (const k in attrs) e.setAttribute(k, attrs[k]);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    }
    el("line", { x1: x(0), x2: x(0), y1: top, y2: h - 20, stroke: "#999", "stroke-dasharray": "3,3" });
    rows.forEach((r, i) => {
      const y = top + rowH * i + rowH / 2;
      el("text", { x: left - 8, y: y + 4, "text-anchor": "end", "font-size": 12 }, r.task);
      el("line", { x1: x(r.lo), x2: x(r.hi), y1: y, y2: y, stroke: r.sig ? "#c0392b" : "#555", "stroke-width": 2 });
      el("circle", { cx: x(r.diff), cy: y, r: 4, fill: r.sig ? "#c0392b" : "#222", class: "forest-point" });
    });
    el("text", { x: x(lo), y: h - 4, "font-size": 11 }, lo.toFixed(3));
    el("text", { x: x(hi), y: h - 4, "font-size": 11, "text-anchor": "end" }, hi.toFixed(3));
    return svg;
  }

  function compare() {
    const metaEl = document.getElementById("compare-meta");
    if (!metaEl) return;
    const meta = JSON.parse(metaEl.textContent);
    const selA = document.getElementById("compare-a"), selB = document.getElementById("compare-b");
    meta.rows.forEach((n, i) => {
      for (const [sel, pick] of [[selA, 0], [selB, 1]]) {
        const o = document.createElement("option");
        o.value = String(i);
        o.textContent = n;
        if (i === pick) o.selected = true;
        sel.appendChild(o);
      }
    });
    const table = document.getElementById("compare-table");
    const body = table.querySelector("tbody");
    const plot = document.getElementById("compare-forest");
    let shown = 0;
    async function show() {
      const a = Number(selA.value), b = Number(selB.value), ticket = ++shown;
      let rows;
      try {
        rows = await pairRows(meta, a, b);
      } catch (e) {
        plot.replaceChildren(document.createTextNode(String(e.message)));
        return;
      }
      if (ticket !== shown) return;  // a later choice is already on its way
      body.replaceChildren();
      for (const r of rows) {
        const tr = document.createElement("tr");
        const cells = [
          r.task,
          (r.diff >= 0 ? "+" : "") + r.diff.toFixed(4) + (r.sig ? " *" : ""),
          "[" + r.lo.toFixed(4) + ", " + r.hi.toFixed(4) + "]",
          r.pv === null ? "–" : r.pv.toPrecision(3),
          r.padj === null ? "–" : r.padj.toPrecision(3),
          r.test,
          String(r.n),
        ];
        for (const c of cells) {
          const td = document.createElement("td");
          td.textContent = c;
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      plot.replaceChildren(rows.length ? forest(rows) : document.createTextNode("pick two different rows"));
      table.dataset.rows = String(rows.length);
      table.dataset.pair = meta.rows[a] + " | " + meta.rows[b];  // what the table shows
    }
    selA.addEventListener("change", show);
    selB.addEventListener("change", show);
    show();
  }

  document.addEventListener("DOMContentLoaded", () => {
    compare();
    leaderboard();
    const details = document.getElementById("instances");
    if (details) {
      let started = false;
      details.addEventListener("toggle", () => {
        if (details.open && !started) {
          started = true;
          instances(details);
        }
      });
    }
  });
})();
