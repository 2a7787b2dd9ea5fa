"""The fixed parts of report.html: page shell, inline CSS, the controls and the script.

Nothing here is ever loaded from elsewhere: the page must open from disk with no server
and no network. The script reads the items from the page's JSON and shows one page of
them at a time (batch.report.page says why); it builds every element with DOM calls and text
nodes, never HTML from the data, and keeps the view in the URL's fragment.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

GROUPS: Final = ("succeeded", "failed", "other", "not-started")
_LABELS: Final = {"other": "unfinished", "not-started": "not started"}

CSS: Final = """
:root{--ok:#1b7f3b;--bad:#b42318;--other:#8a6d00;--line:#d9dce1;--muted:#5c6370;
--bg:#f6f7f9;--card:#fff;--none:#6e7781}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:#1f2328}
header.top{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid var(--line);
padding:12px 20px}
h1{margin:0 0 6px;font-size:18px}
.meta{color:var(--muted);font-size:12px;margin:0 0 8px}
.counts{display:flex;flex-wrap:wrap;gap:6px 16px;margin:0 0 10px;padding:0;list-style:none}
.counts li b{font-variant-numeric:tabular-nums}
.filters{display:flex;gap:6px;flex-wrap:wrap;align-items:center}
.filters span{display:flex;gap:6px;flex-wrap:wrap}
.filters span[hidden],.filters select[hidden]{display:none}
.views{margin-right:10px}
.filters button,.pager button{font:inherit;padding:4px 12px;border:1px solid var(--line);
border-radius:14px;background:#fff;cursor:pointer}
.filters button[aria-pressed=true]{background:#1f2328;color:#fff;border-color:#1f2328}
.filters select,.filters input{font:inherit;padding:4px 8px;border:1px solid var(--line);
border-radius:6px;background:#fff}
.filters input{min-width:240px;flex:1;max-width:420px}
.pager{display:flex;gap:10px;align-items:center;padding:8px 20px 0;color:var(--muted);
font-size:13px}
.pager button[disabled]{opacity:.4;cursor:default}
.pager .jump{font:inherit;width:110px;padding:3px 8px;border:1px solid var(--line);
border-radius:6px}
#pager-bottom{padding:0 20px 20px}.pager[hidden]{display:none}
main{padding:12px 20px;display:flex;flex-direction:column;gap:10px}
.card{display:grid;grid-template-columns:auto minmax(220px,1fr) auto;gap:12px;
background:var(--card);border:1px solid var(--line);border-left:4px solid var(--other);
border-radius:6px;padding:10px}
.card[data-group=succeeded],.cell[data-group=succeeded]{border-left-color:var(--ok)}
.card[data-group=failed],.cell[data-group=failed]{border-left-color:var(--bad)}
.card[data-group=not-started],.cell[data-group=not-started]{border-left-color:var(--line)}
h2{margin:0 0 4px;font-size:14px;word-break:break-all}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;color:#fff;
background:var(--other);margin-left:6px;vertical-align:1px;word-break:normal}
.badge.succeeded{background:var(--ok)}.badge.failed{background:var(--bad)}
.badge.orphan,.badge.model{background:var(--none)}
.badge.not-started{background:#aab0b8}
.prompt{margin:0 0 6px;white-space:pre-wrap;word-break:break-word}
dl{display:grid;grid-template-columns:max-content 1fr;gap:0 10px;margin:0;font-size:12px}
dt{color:var(--muted)}dd{margin:0;word-break:break-all}
.error{margin:6px 0 0;color:var(--bad);white-space:pre-wrap;word-break:break-word}
.hint{margin:2px 0 0;color:var(--muted);white-space:pre-wrap;word-break:break-word}
.refs,.outs{display:flex;gap:6px;align-items:flex-start;flex-wrap:wrap}
.card .refs{flex-direction:column;width:96px}
.refs img{width:96px;height:96px}
.outs img{width:160px;height:160px}
img{object-fit:contain;background:#eef0f3;border-radius:4px;display:block}
.ref-text,.missing{font-size:11px;color:var(--muted);word-break:break-all;max-width:160px}
.missing{width:160px;height:160px;display:flex;align-items:center;justify-content:center;
text-align:center;background:#eef0f3;border-radius:4px;padding:6px}
.refs .missing{width:96px;height:96px}
figure{margin:0}figcaption{font-size:11px;color:var(--muted);max-width:160px;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.empty{color:var(--muted);padding:40px;text-align:center}
main.compare{gap:8px}
.cmp-row{display:grid;grid-template-columns:260px repeat(var(--cols,1),minmax(176px,1fr));gap:8px}
.cmp-head{position:sticky;top:0;font-weight:600;color:var(--muted);font-size:12px}
.cmp-input,.cell{background:var(--card);border:1px solid var(--line);border-radius:6px;
padding:8px;min-width:0}
.cmp-head .cmp-input,.cmp-head .cell{background:none;border:none;padding:0 8px;
word-break:break-all}
.cell{border-left:4px solid var(--other)}
.cell.none{border-left-color:var(--line);color:var(--muted);display:flex;align-items:center;
justify-content:center}
.cmp-input .refs img{width:72px;height:72px}.cmp-input .refs .missing{width:72px;height:72px}
.cell .meta{margin:4px 0 0}
@media (max-width:760px){.card{grid-template-columns:1fr}.card .refs{flex-direction:row;
width:auto}}
"""

# Runs once at the end of <body>; no network, no eval, no HTML from the data.
SCRIPT: Final = r"""
(function(){
  "use strict";
  var source = document.getElementById("report-data");
  var D = JSON.parse(source.textContent);
  source.remove();  // tens of MB of text at 100,000 items, no longer needed
  var items = D.items, models = D.models, prompts = D.prompts, refs = D.refs;
  var ID = 0, BASE = 1, MODEL = 2, STATE = 3, PROMPT = 4, REFS = 5, OUTS = 6, COST = 7,
      DUR = 8, ATTEMPTS = 9, JOB = 10, ERROR = 11, HINT = 12, FLAG = 13;
  var FILTERS = ["all", "succeeded", "failed", "other", "not-started"];
  var FLAGS = ["", "not in manifest", "inputs changed since"];
  var body = document.body, list = document.getElementById("list");
  var search = document.getElementById("q"), modelSelect = document.getElementById("model");
  var views = document.querySelector(".views");
  var pagers = [document.getElementById("pager-top"), document.getElementById("pager-bottom")];
  var defaultView = models.length > 1 ? "compare" : "items";
  var ui = {view: defaultView, state: "all", model: -1, q: "", page: 1};
  var haystack = null, groups = null;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function modelName(m) { return models[m] || "(model not recorded)"; }
  function image(thumb, href, name, title) {
    var src = typeof thumb === "string" ? "thumbs/" + thumb + ".jpg" : (thumb === 1 ? href : null);
    if (!src) {
      var box = el("div", "missing", name);
      box.title = title || name;
      return box;
    }
    var img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = name;
    img.src = src;
    return img;
  }
  function link(href, title, child) {
    var a = el("a");
    a.href = href;
    a.title = title;
    a.appendChild(child);
    return a;
  }
  function badge(text, cls) { return el("span", "badge " + cls, text); }
  function groupOf(r) { return D.groups[r[STATE]]; }

  function references(r) {
    var box = el("div", "refs");
    r[REFS].forEach(function(index){
      var ref = refs[index];
      if (ref[0] === 1) {
        var text = el("div", "ref-text", ref[1]);
        text.title = ref[2];
        box.appendChild(text);
      } else {
        var shown = image(ref[3], ref[4], ref[1], ref[2]);
        box.appendChild(ref[4] ? link(ref[4], ref[2], shown) : shown);
      }
    });
    return box;
  }
  function outputs(r) {
    var box = el("div", "outs");
    r[OUTS].forEach(function(out){
      var name = out[0], thumb = out[1], href = out[2] || out[0];
      if (thumb === -1) {
        box.appendChild(el("div", "missing", "outside the output directory: " + name));
        return;
      }
      var figure = el("figure");
      figure.appendChild(link(href, name, image(thumb, href, name)));
      figure.appendChild(el("figcaption", null, name));
      box.appendChild(figure);
    });
    return box;
  }
  function facts(r) {
    var dl = el("dl");
    function row(term, value) {
      dl.appendChild(el("dt", null, term));
      dl.appendChild(el("dd", null, value === null || value === "" ? "\u2014" : value));
    }
    row("cost", r[COST] ? r[COST] + " CU" : null);
    row("duration", r[DUR]);
    row("attempts", r[ATTEMPTS]);
    row("job", r[JOB]);
    return dl;
  }
  function problems(box, r) {
    if (r[ERROR]) box.appendChild(el("p", "error", r[ERROR]));
    if (r[HINT]) box.appendChild(el("p", "hint", "hint: " + r[HINT]));
  }
  function card(i) {
    var r = items[i], state = D.states[r[STATE]];
    var node = el("article", "card");
    node.dataset.group = groupOf(r);
    node.dataset.state = state;
    node.dataset.id = r[ID];
    var info = el("div", "info"), title = el("h2", null, r[ID]);
    title.appendChild(badge(state, groupOf(r)));
    if (models.length > 1) title.appendChild(badge(modelName(r[MODEL]), "model"));
    if (r[FLAG]) title.appendChild(badge(FLAGS[r[FLAG]], "orphan"));
    info.appendChild(title);
    if (r[PROMPT] >= 0) info.appendChild(el("p", "prompt", prompts[r[PROMPT]]));
    if (r[STATE] !== undefined && state !== "not started") info.appendChild(facts(r));
    problems(info, r);
    node.appendChild(references(r));
    node.appendChild(info);
    node.appendChild(outputs(r));
    return node;
  }

  function buildGroups() {
    var byBase = new Map();
    groups = [];
    for (var i = 0; i < items.length; i++) {
      var r = items[i], base = r[BASE] === 0 ? r[ID] : r[BASE], g = byBase.get(base);
      if (g === undefined) {
        g = {base: base, first: i, cells: new Array(models.length)};
        byBase.set(base, g);
        groups.push(g);
      }
      if (g.cells[r[MODEL]] === undefined) g.cells[r[MODEL]] = i;
    }
  }
  function columns() {
    if (ui.model >= 0) return [ui.model];
    return models.map(function(_, m){ return m; });
  }
  function compareHead(cols) {
    var row = el("div", "cmp-row cmp-head");
    row.appendChild(el("div", "cmp-input", "input"));
    cols.forEach(function(m){ row.appendChild(el("div", "cell", modelName(m))); });
    return row;
  }
  function compareRow(g, cols) {
    var row = el("article", "cmp-row"), first = items[g.first];
    row.dataset.base = g.base;
    var input = el("div", "cmp-input");
    input.appendChild(references(first));
    input.appendChild(el("h2", null, g.base));
    if (first[PROMPT] >= 0) input.appendChild(el("p", "prompt", prompts[first[PROMPT]]));
    row.appendChild(input);
    cols.forEach(function(m){
      var i = g.cells[m];
      if (i === undefined) {
        var none = el("div", "cell none", "\u2014");
        none.title = "this input does not run on " + modelName(m);
        row.appendChild(none);
        return;
      }
      var r = items[i], cell = el("div", "cell"), state = D.states[r[STATE]];
      cell.dataset.group = groupOf(r);
      cell.dataset.id = r[ID];
      cell.dataset.model = modelName(m);
      cell.appendChild(badge(state, groupOf(r)));
      cell.appendChild(outputs(r));
      var bits = [r[ID]];
      if (r[COST]) bits.push(r[COST] + " CU");
      if (r[DUR]) bits.push(r[DUR]);
      cell.appendChild(el("p", "meta", bits.join(" \u00b7 ")));
      problems(cell, r);
      row.appendChild(cell);
    });
    return row;
  }

  function matchesText(i) {
    if (!ui.q) return true;
    if (!haystack) {
      var lower = prompts.map(function(p){ return p.toLowerCase(); });
      haystack = new Array(items.length);
      for (var k = 0; k < items.length; k++) {
        var r = items[k];
        haystack[k] = (r[ID] + "\n" + (r[BASE] === 0 ? "" : r[BASE])).toLowerCase() + "\n" +
          (r[PROMPT] >= 0 ? lower[r[PROMPT]] : "");
      }
    }
    return haystack[i].indexOf(ui.q) >= 0;
  }
  function matches(i) {
    var r = items[i];
    if (ui.state !== "all" && groupOf(r) !== ui.state) return false;
    if (ui.model >= 0 && r[MODEL] !== ui.model) return false;
    return matchesText(i);
  }
  function found() {
    var hits = [], i;
    if (ui.view === "compare") {
      if (!groups) buildGroups();
      for (var g = 0; g < groups.length; g++) {
        var cells = groups[g].cells;
        for (var m = 0; m < cells.length; m++) {
          if (cells[m] !== undefined && matches(cells[m])) { hits.push(g); break; }
        }
      }
    } else {
      for (i = 0; i < items.length; i++) if (matches(i)) hits.push(i);
    }
    return hits;
  }

  function pager(total, start, end, pages) {
    var noun = ui.view === "compare" ? "inputs" : "items";
    pagers.forEach(function(nav, index){
      nav.hidden = index > 0 && pages < 2;
      var prev = el("button", null, "\u2039 previous"), next = el("button", null, "next \u203a");
      prev.type = next.type = "button";
      prev.dataset.page = String(ui.page - 1);
      next.dataset.page = String(ui.page + 1);
      prev.disabled = ui.page <= 1;
      next.disabled = ui.page >= pages;
      var where = total ? noun + " " + (start + 1) + "\u2013" + end + " of " + total : "no " + noun;
      var label = el("span", null, "page " + ui.page + " of " + pages + " \u00b7 " + where);
      nav.replaceChildren(prev, label, next);
      if (pages > 1) {
        var jump = el("input", "jump");
        jump.type = "number";
        jump.min = "1";
        jump.max = String(pages);
        jump.placeholder = "go to page";
        jump.setAttribute("aria-label", "go to page");
        nav.appendChild(jump);
      }
    });
  }
  function render() {
    var hits = found(), size = D.pageSize;
    var pages = Math.max(1, Math.ceil(hits.length / size));
    ui.page = Math.min(Math.max(1, ui.page), pages);
    var start = (ui.page - 1) * size, end = Math.min(hits.length, start + size);
    var page = document.createDocumentFragment(), k;
    if (ui.view === "compare") {
      var cols = columns();
      list.style.setProperty("--cols", String(cols.length));
      if (hits.length) page.appendChild(compareHead(cols));
      for (k = start; k < end; k++) page.appendChild(compareRow(groups[hits[k]], cols));
    } else {
      for (k = start; k < end; k++) page.appendChild(card(hits[k]));
    }
    if (!hits.length) {
      var why = items.length ? "No item matches." : "No items in this ledger yet.";
      page.appendChild(el("p", "empty", why));
    }
    list.replaceChildren(page);
    list.className = ui.view;
    pager(hits.length, start, end, pages);
    document.querySelectorAll("button[data-filter]").forEach(function(b){
      b.setAttribute("aria-pressed", String(b.dataset.filter === ui.state));
    });
    document.querySelectorAll("[data-view]").forEach(function(b){
      b.setAttribute("aria-pressed", String(b.dataset.view === ui.view));
    });
    body.dataset.filter = ui.state;
    body.dataset.view = ui.view;
    body.dataset.matching = String(hits.length);
    body.dataset.page = String(ui.page);
  }

  function readHash() {
    var text = location.hash.slice(1);
    if (text && text.indexOf("=") < 0) text = "state=" + text;  // report.html#failed
    var p = new URLSearchParams(text), view = p.get("view"), state = p.get("state");
    ui.view = view === "items" || view === "compare" ? view : defaultView;
    ui.state = FILTERS.indexOf(state) >= 0 ? state : "all";
    ui.model = p.has("model") ? models.indexOf(p.get("model")) : -1;
    search.value = p.get("q") || "";
    ui.q = search.value.trim().toLowerCase();
    ui.page = parseInt(p.get("page") || "1", 10) || 1;
    modelSelect.value = ui.model >= 0 ? String(ui.model) : "";
  }
  function update(keepPage) {
    if (!keepPage) ui.page = 1;
    var p = new URLSearchParams();
    if (ui.view !== defaultView) p.set("view", ui.view);
    if (ui.state !== "all") p.set("state", ui.state);
    if (ui.model >= 0) p.set("model", models[ui.model]);
    if (search.value.trim()) p.set("q", search.value.trim());
    if (ui.page > 1) p.set("page", String(ui.page));
    history.replaceState(null, "", "#" + p.toString());
    render();
  }

  models.forEach(function(_, m){
    var option = el("option", null, modelName(m));
    option.value = String(m);
    modelSelect.appendChild(option);
  });
  modelSelect.hidden = views.hidden = models.length < 2;
  document.querySelector(".filters").addEventListener("click", function(event){
    var b = event.target.closest("button");
    if (!b) return;
    if (b.dataset.filter) ui.state = b.dataset.filter;
    if (b.dataset.view) ui.view = b.dataset.view;
    update(false);
  });
  pagers.forEach(function(nav){
    nav.addEventListener("change", function(event){
      var page = parseInt(event.target.value, 10);
      if (!page) return;
      ui.page = page;
      update(true);
    });
    nav.addEventListener("click", function(event){
      var b = event.target.closest("button");
      if (!b || b.disabled) return;
      ui.page = parseInt(b.dataset.page, 10) || 1;
      update(true);
      window.scrollTo(0, 0);
    });
  });
  modelSelect.addEventListener("change", function(){
    ui.model = modelSelect.value === "" ? -1 : parseInt(modelSelect.value, 10);
    update(false);
  });
  var typing = 0;
  search.addEventListener("input", function(){
    clearTimeout(typing);
    typing = setTimeout(function(){
      ui.q = search.value.trim().toLowerCase();
      update(false);
    }, 150);
  });
  window.addEventListener("hashchange", function(){ readHash(); render(); });
  readHash();
  render();
  body.dataset.readyMs = String(Math.round(performance.now()));
})();
"""

# The CSP allows exactly this script: should escaping ever slip, injected script won't run.
SCRIPT_HASH: Final = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()

# Between the header and the page's JSON (which the report writes, escaped).
DATA_OPEN: Final = (
    '<nav class="pager" id="pager-top"></nav>\n'
    '<main id="list"></main>\n<nav class="pager" id="pager-bottom"></nav>\n'
    "<noscript><p class=empty>This report needs JavaScript to show its items.</p></noscript>\n"
    '<script type="application/json" id="report-data">'
)


def head(title: str) -> str:
    """Everything up to <body>; `title` must already be HTML-escaped."""
    return (
        "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        '<meta name=viewport content="width=device-width,initial-scale=1">\n'
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
        "img-src 'self' file: data:; style-src 'unsafe-inline'; "
        f"script-src '{SCRIPT_HASH}'\">\n"
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n"
    )


def controls(total: int, groups: dict[str, int]) -> str:
    """Views, state filters with their counts, the model filter and the search box."""
    buttons = [f'<button type=button data-filter="all">all ({total})</button>']
    for group in GROUPS:
        if groups[group] or group in ("succeeded", "failed"):
            label = _LABELS.get(group, group)
            buttons.append(
                f'<button type=button data-filter="{group}">{label} ({groups[group]})</button>'
            )
    return (
        '<nav class="filters">\n<span class="views" hidden>'
        '<button type=button data-view="items">items</button>'
        '<button type=button data-view="compare">compare models</button></span>\n'
        f'<span class="states">{"".join(buttons)}</span>\n'
        '<select id="model" aria-label="model" hidden><option value="">all models</option>'
        "</select>\n"
        '<input id="q" type=search placeholder="find by id or prompt" aria-label="find">\n'
        "</nav>\n"
    )


def tail() -> str:
    """Closes the JSON, then the script and the closing tags."""
    return f"</script>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
