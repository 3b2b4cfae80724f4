"""clean's review page: report.html, every finding with its thumbnail and a decision to export.

    pokemon-classifier clean data/      # -> data/clean/report.html (decisions.csv: clean data/ --apply)
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from pokemon_classifier import pokedex
from pokemon_classifier.fileio import atomic_write_text


def _thumb(path: Path, size: int = 112) -> str:
    from pokemon_classifier.errors import ImageError
    from pokemon_classifier.images import load_image

    try:
        img = load_image(path)
    except ImageError:
        return ""
    img.thumbnail((size, size))
    b = io.BytesIO()
    img.save(b, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(b.getvalue()).decode()


TITLES = {"unreadable": "Unreadable files", "too_small": "Too small", "cross_class_duplicate":
          "Duplicates across classes (label errors or ambiguous)", "label_issue": "Likely wrong labels",
          "exact_duplicate": "Byte-identical copies", "near_duplicate": "Near-duplicates", "outlier": "Outliers"}


def write_report(data_dir: Path, cand: pd.DataFrame, out_dir: Path, max_per_section: int = 300) -> Path:
    options = "".join(f'<option value="{pokedex.name(i)}">{html.escape(pokedex.display_name(i))}</option>' for i in pokedex.IDS)
    sections = []
    for finding, g in cand.groupby("finding", sort=False):
        cards = []
        for r in g.head(max_per_section).itertuples():
            src = _thumb(data_dir / "images" / r.img_name)
            # nothing changes unless a person chooses it; the suggested label is pre-selected for relabel
            default = "remove" if r.finding == "unreadable" else "keep"
            sugg = pokedex.name(int(r.suggested_id)) if str(r.suggested_id) not in ("", "nan") else ""
            cards.append(
                f'<div class="c" data-img="{html.escape(r.img_name)}" data-default="{default}" data-sugg="{sugg}">'
                + (f'<img src="{src}" alt="">' if src else '<div class="ni">no preview</div>')
                + f'<b>{html.escape(r.img_name)}</b><span>given: {html.escape(str(r.given))}</span>'
                + (f'<span>suggested: {html.escape(str(r.suggested))} ({r.probability})</span>' if sugg else "")
                + f'<small>{html.escape(str(r.reason))}</small>'
                + '<select class="a"><option>keep</option><option>relabel</option><option>remove</option></select>'
                + '<select class="l"><option value=""></option>' + options + "</select></div>")
        more = f"<p>{len(g) - max_per_section} more in candidates.csv</p>" if len(g) > max_per_section else ""
        sections.append(f'<h2>{TITLES.get(finding, finding)} ({len(g)})</h2><div class="g">{"".join(cards)}</div>{more}')
    page = f"""<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Clean review: {html.escape(str(data_dir))}</title><style>
body{{font:14px system-ui,sans-serif;margin:1rem;background:#fafafa}} .g{{display:flex;flex-wrap:wrap;gap:.6rem}}
.c{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4rem;width:190px;display:flex;flex-direction:column;gap:.15rem}}
.c img{{max-width:112px;max-height:112px;align-self:center}} .c small{{color:#666}} .ni{{height:112px;color:#999}}
.c.remove{{background:#fee}} .c.relabel{{background:#eef6ff}} #bar{{position:sticky;top:0;background:#fafafa;padding:.5rem 0}}
button{{font-size:1rem;padding:.4rem .8rem}}</style></head><body>
<h1>Review candidates for {html.escape(str(data_dir))}</h1>
<div id="bar"><button id="export">Export decisions.csv</button> <span id="count"></span>
<p>Choose keep / relabel (pick the right Pokémon) / remove, export, then run
<code>pokemon-classifier clean {html.escape(str(data_dir))} --apply decisions.csv</code>. Removed files go to quarantine/; nothing is deleted.</p></div>
{"".join(sections)}
<script>
const cards=[...document.querySelectorAll('.c')];
for(const c of cards){{const a=c.querySelector('.a'),l=c.querySelector('.l');a.value=c.dataset.default;l.value=c.dataset.sugg;
 const upd=()=>{{c.className='c '+a.value;}};a.onchange=upd;upd();}}
function csv(){{const seen=new Set();let out='img_name,action,new_label\\n';
 for(const c of cards){{const a=c.querySelector('.a').value,l=c.querySelector('.l').value,n=c.dataset.img;
  if(a==='keep'||seen.has(n))continue;seen.add(n);out+=`"${{n.replace(/"/g,'""')}}",${{a}},${{a==='relabel'?l:''}}\\n`;}}return out;}}
document.getElementById('export').onclick=()=>{{const b=new Blob([csv()],{{type:'text/csv'}});const u=URL.createObjectURL(b);
 const e=document.createElement('a');e.href=u;e.download='decisions.csv';e.click();}};
</script></body></html>"""
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path
