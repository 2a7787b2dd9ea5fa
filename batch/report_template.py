"""The fixed parts of report.html: page shell, inline CSS and the filter script.

Nothing here is ever loaded from elsewhere: the page must open from disk with no server
and no network. The filter script toggles `hidden` on each card (one pass, no layout
reads), and honours a URL fragment (`report.html#failed`) so a link can open a view.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

GROUPS: Final = ("succeeded", "failed", "other")

CSS: Final = """
:root{--ok:#1b7f3b;--bad:#b42318;--other:#8a6d00;--line:#d9dce1;--muted:#5c6370;
--bg:#f6f7f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:#1f2328}
header.top{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid var(--line);
padding:12px 20px}
h1{margin:0 0 6px;font-size:18px}
.meta{color:var(--muted);font-size:12px;margin:0 0 8px}
.counts{display:flex;flex-wrap:wrap;gap:6px 16px;margin:0 0 10px;padding:0;list-style:none}
.counts li b{font-variant-numeric:tabular-nums}
.filters{display:flex;gap:6px;flex-wrap:wrap}
.filters button{font:inherit;padding:4px 12px;border:1px solid var(--line);border-radius:14px;
background:#fff;cursor:pointer}
.filters button[aria-pressed=true]{background:#1f2328;color:#fff;border-color:#1f2328}
main{padding:12px 20px;display:flex;flex-direction:column;gap:10px}
.card{display:grid;grid-template-columns:auto minmax(220px,1fr) auto;gap:12px;
background:var(--card);border:1px solid var(--line);border-left:4px solid var(--other);
border-radius:6px;padding:10px;content-visibility:auto;contain-intrinsic-size:auto 190px}
.card[data-group=succeeded]{border-left-color:var(--ok)}
.card[data-group=failed]{border-left-color:var(--bad)}
.card[hidden]{display:none}
.card h2{margin:0 0 4px;font-size:14px;word-break:break-all}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;color:#fff;
background:var(--other);margin-left:6px;vertical-align:1px}
.badge.succeeded{background:var(--ok)}.badge.failed{background:var(--bad)}
.badge.orphan{background:#6e7781}
.prompt{margin:0 0 6px;white-space:pre-wrap;word-break:break-word}
dl{display:grid;grid-template-columns:max-content 1fr;gap:0 10px;margin:0;font-size:12px}
dt{color:var(--muted)}dd{margin:0;word-break:break-all}
.error{margin:6px 0 0;color:var(--bad);white-space:pre-wrap;word-break:break-word}
.hint{margin:2px 0 0;color:var(--muted);white-space:pre-wrap;word-break:break-word}
.refs,.outs{display:flex;gap:6px;align-items:flex-start}
.refs{flex-direction:column;width:96px}
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
@media (max-width:760px){.card{grid-template-columns:1fr}.refs{flex-direction:row;width:auto}}
"""

# Runs once at the end of <body>; no network, no eval, no strings from the data.
SCRIPT: Final = """
(function(){
  var groups = ["all", "succeeded", "failed", "other"];
  var cards = document.querySelectorAll("main .card");
  var buttons = document.querySelectorAll(".filters button");
  function show(group){
    if (groups.indexOf(group) < 0) group = "all";
    for (var i = 0; i < cards.length; i++) {
      cards[i].hidden = group !== "all" && cards[i].dataset.group !== group;
    }
    for (var j = 0; j < buttons.length; j++) {
      buttons[j].setAttribute("aria-pressed", String(buttons[j].dataset.filter === group));
    }
    document.body.dataset.filter = group;
  }
  for (var k = 0; k < buttons.length; k++) {
    buttons[k].addEventListener("click", function(){
      var group = this.dataset.filter;
      history.replaceState(null, "", "#" + group);
      show(group);
    });
  }
  window.addEventListener("hashchange", function(){ show(location.hash.slice(1)); });
  show(location.hash.slice(1));
})();
"""

# The CSP allows exactly this script: should escaping ever slip, injected script won't run.
SCRIPT_HASH: Final = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()


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


def tail() -> str:
    """The filter script and the closing tags."""
    return f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
