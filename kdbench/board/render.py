"""A Board as people and programs read it: the terminal summary, the full table (Markdown),
CSV and JSON exports, and the HTML page.

Every view puts the same key columns first: the primary quality metric, the KD gain with its
confidence interval, the gap to the teacher, the headline costs the metrics declare (parameters,
size, median latency) and the speed-up over the teacher.
"""

from __future__ import annotations

import base64
import html
import json
import math
import textwrap
from pathlib import Path

import pandas as pd

from kdbench.board.aggregate import Board
from kdbench.board.compare import COMPARISONS, GAIN, GAIN_HIGH, GAIN_LOW, GAP, SPEEDUP
from kdbench.records import MetricMeta

SUMMARY_WIDTH = 100  # what a terminal shows without wrapping; the files hold every column
_NAME_WIDTH = 18


def fmt(value: float) -> str:
    """A number in as few characters as its size allows ("–" when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01 or value == 0:
        return f"{value:.3f}".rstrip("0").rstrip(".") if magnitude < 1 else f"{value:.2f}"
    return f"{value:.2e}"


def count(value: float) -> str:
    """1234567 -> 1.23M: parameter counts read at a glance."""
    if value is None or math.isnan(value):
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def header(name: str, meta: MetricMeta) -> str:
    arrow = "↑" if meta.higher_is_better else "↓"
    return f"{name} ({meta.unit}) {arrow}" if meta.unit else f"{name} {arrow}"


def _value(value: float, meta: MetricMeta) -> str:
    return count(value) if meta.unit == "count" else fmt(value)


def _gain(gain: float, low: float, high: float) -> str:
    if math.isnan(gain):
        return ""
    return f"{gain:+.2f}" + ("" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]")


def _notes(rec: dict) -> str:
    return "; ".join(n for n in (rec.get("flag", ""), rec.get("timing", "")) if n)


def key_frame(board: Board, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The key columns, formatted, one row per board row (the same order)."""
    frame = board.frame if frame is None else frame
    p = board.primary
    out = pd.DataFrame({"rank": ["" if math.isnan(r) else str(int(r)) for r in frame["rank"]],
                        "role": frame["role"].values, "model": frame["model"].values,
                        "loss": [loss or "–" for loss in frame["loss"]],
                        "teacher": frame["teacher"].values, "target": frame["target"].values,
                        "n": frame["n"].values})
    if p and p in frame:
        meta = board.columns[p]
        out[header(p, meta)] = [fmt(m) + ("" if math.isnan(s) else f" ± {fmt(s)}")
                                for m, s in zip(frame[p], frame[f"{p} std"])]
        out[f"{GAIN} [95% CI]"] = [_gain(g, lo, hi) for g, lo, hi in zip(frame[GAIN], frame[GAIN_LOW], frame[GAIN_HIGH])]
        out[GAP] = ["" if math.isnan(v) else f"{v:+.2f}" for v in frame[GAP]]
    for name in board.costs():
        out[header(name, board.columns[name])] = [_value(v, board.columns[name]) for v in frame[name]]
    if board.speedup_metric():
        out[SPEEDUP] = ["" if math.isnan(v) else f"{v:.1f}x" for v in frame[SPEEDUP]]
    out["notes"] = [_notes(r) for r in frame.to_dict("records")]
    return out


def more_frame(board: Board, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every other metric (mean ± std), coverage, provenance and time: behind the toggle."""
    frame = board.frame if frame is None else frame
    key = {board.primary, *board.costs()}
    out = pd.DataFrame(index=range(len(frame)))
    for name, meta in board.columns.items():
        if name in key or name not in frame:
            continue
        out[header(name, meta)] = [_value(m, meta) + ("" if math.isnan(s) else f" ± {_value(s, meta)}")
                                   for m, s in zip(frame[name], frame[f"{name} std"])]
    out["seeds"] = frame["seeds"].values
    out["coverage"] = [f"{c:.0%}" for c in frame["coverage"]]
    out["provenance"] = frame["provenance"].values
    # rows that differ only in provenance are told apart by when they ran, too
    out["last run (UTC)"] = [t.strftime("%Y-%m-%d %H:%M") for t in frame["last_run"]]
    return out


def display(board: Board) -> pd.DataFrame:
    """Key columns, then everything else: the full table of Markdown and the CLI."""
    if board.empty:
        return board.frame
    return pd.concat([key_frame(board), more_frame(board)], axis=1)


def to_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no successful runs_\n"
    cells = lambda row: " | ".join(str(v).replace("|", "\\|") for v in row)  # noqa: E731
    body = ["| " + cells(row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(["| " + cells(frame.columns) + " |", "| " + " | ".join("---" for _ in frame.columns) + " |",
                      *body]) + "\n"


# ---- the terminal summary --------------------------------------------------------------------------
def _short(name: str, unit: str) -> str:
    """``latency_p50_ms`` -> ``latency_p50``: the unit is printed under the name."""
    base = name.split("/")[-1]
    suffix = "_" + unit.lower().replace("/", "")
    return base[: -len(suffix)] if unit and base.lower().endswith(suffix) else base


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + fmt(abs(value))


def summary_columns(board: Board, rows: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """(name, second header line, cells) of the summary's columns for ``rows``."""
    p, meta = board.primary, board.columns[board.primary]
    several = rows["teacher"].replace("", pd.NA).dropna().nunique() > 1
    cols = [("model", "", [str(m) for m in rows["model"]]),
            ("loss", "", [(loss or "–") + (f" ← {t}" if several and t else "") for loss, t in zip(rows["loss"], rows["teacher"])]),
            (_short(p, meta.unit), f"{meta.unit} {'↑' if meta.higher_is_better else '↓'}".strip(), [fmt(v) for v in rows[p]]),
            ("KD gain", "[95% CI]", ["" if math.isnan(g) else _signed(g) + ("" if math.isnan(lo) else
                                                                       f" [{_signed(lo)}, {_signed(hi)}]")
                                     for g, lo, hi in zip(rows[GAIN], rows[GAIN_LOW], rows[GAIN_HIGH])]),
            ("gap to", "teacher", ["" if math.isnan(v) else _signed(v) for v in rows[GAP]])]
    for name in board.costs():
        m = board.columns[name]
        cols.append((_short(name, m.unit), m.unit if m.unit != "count" else "", [_value(v, m) for v in rows[name]]))
    if board.speedup_metric():
        cols.append(("speed-up", "vs teacher", ["" if math.isnan(v) else f"{v:.1f}x" for v in rows[SPEEDUP]]))
    return cols


def summary_text(board: Board) -> str:
    """The key columns as aligned plain text, one section per target, no wider than
    ``SUMMARY_WIDTH`` (long names cut with "…"): the same in a terminal and in a CI log. A row
    with a note (low coverage, timed under load) ends in "*"; the files give the note."""
    if board.empty or not board.primary:
        return "no successful runs to summarise"
    sections = []
    for target in board.target_order:
        rows = board.frame[board.frame["target"] == target]
        if rows.empty:
            continue
        cols = summary_columns(board, rows)
        cols = [(n, u, [v if len(v) <= _NAME_WIDTH else v[:_NAME_WIDTH - 1] + "…" for v in cells]) if i < 2
                else (n, u, cells) for i, (n, u, cells) in enumerate(cols)]
        widths = [max(len(n), len(u), *(len(v) for v in cells)) for n, u, cells in cols]

        # two spaces between columns when they fit, else one: cutting the line would hide the
        # last columns (the speed-up) without a word
        gap = "  " if sum(widths) + 2 * (len(widths) - 1) <= SUMMARY_WIDTH else " "

        def line(values: list[str]) -> str:
            return gap.join(v.ljust(w) if i < 2 else v.rjust(w)
                            for i, (v, w) in enumerate(zip(values, widths))).rstrip()[:SUMMARY_WIDTH]

        notes = [_notes(r) for r in rows.to_dict("records")]
        lines = [f"{target}", line([n for n, _, _ in cols]), line([u for _, u, _ in cols])]
        lines += [line([cells[i] for _, _, cells in cols]) + (" *" if notes[i] else "") for i in range(len(rows))]
        sections.append("\n".join(lines))
    legend = (f"ranked by {board.primary}, mean over seeds; KD gain: better-by than the same student without KD, "
              f"{board.gain_ci}; gap: student - teacher; *: see the notes in the files")
    return "\n\n".join(sections) + "\n\n" + textwrap.fill(legend, SUMMARY_WIDTH)


# ---- files ---------------------------------------------------------------------------------------
def export_frame(board: Board) -> pd.DataFrame:
    """Raw numbers and every provenance field: what CSV and JSON exports carry."""
    frame = board.frame.drop(columns=["run_ids"], errors="ignore").copy()
    if "last_run" in frame:
        frame["last_run"] = frame["last_run"].astype(str)
    return frame


def render(board: Board, fmt_name: str, title: str = "kdbench leaderboard") -> str:
    if fmt_name == "csv":
        return export_frame(board).to_csv(index=False)
    if fmt_name == "json":
        return json.dumps({"primary": board.primary, "min_coverage": board.min_coverage, "kd_gain_ci": board.gain_ci,
                           "notes": board.notes,
                           "metrics": {k: m.__dict__ for k, m in board.columns.items()},
                           "rows": json.loads(export_frame(board).to_json(orient="records"))}, indent=2)
    if fmt_name == "md":
        return to_markdown(display(board))
    if fmt_name == "summary":
        return summary_text(board) + "\n"
    if fmt_name == "html":
        return html_page(board, title, {})
    raise ValueError(fmt_name)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}
h2{margin:1.6em 0 .4em;border-bottom:1px solid #ccc}
.section{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}
.tablebox{flex:1 1 600px;overflow-x:auto}
table{border-collapse:collapse;font-size:13px;white-space:nowrap}
th,td{padding:4px 7px;border-bottom:1px solid #e3e3e3;text-align:right}
th{background:#f4f4f4;cursor:pointer;position:sticky;top:0;white-space:normal;vertical-align:bottom;min-width:3em}
th.name,td.name{text-align:left}
tr.teacher td{background:#f7fafd}
.more{display:none}
body.showall .more{display:table-cell}
.note{cursor:help;color:#b26a00}
figure{margin:0 0 .8em}
figure img{width:340px;display:block}
figcaption{font-size:12px;color:#555}
.plots{flex:0 0 345px}
.legend{color:#555;font-size:13px;max-width:70em}
audio{height:24px;width:110px;vertical-align:middle}
"""

_SCRIPT = """
document.querySelectorAll('table.board').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
    var rows=Array.from(t.tBodies[0].rows), asc=th.dataset.dir!=='asc';
    var key=function(r){var c=r.cells[i];return c.dataset.v!==undefined?c.dataset.v:c.textContent};
    rows.sort(function(a,b){var x=key(a),y=key(b),nx=parseFloat(x),ny=parseFloat(y);
      var d=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y));return asc?d:-d});
    th.dataset.dir=asc?'asc':'desc'; rows.forEach(function(r){t.tBodies[0].appendChild(r)});});});});
var showall=document.getElementById('showall');
showall.addEventListener('change',function(e){document.body.classList.toggle('showall',e.target.checked)});
if(location.hash==='#all'){showall.checked=true;document.body.classList.add('showall')}  // a link to every column
"""


_TIPS = {f"{GAIN} [95% CI]": "better-by than the same student trained without KD",
         GAP: "student minus its teacher on the ranking metric",
         SPEEDUP: "the teacher's value over the student's, on the same target"}


def _table(board: Board, rows: pd.DataFrame) -> str:
    """One target's rows. Metric headers are short (the split and the unit suffix go to the
    tooltip) and the teacher column appears only when the section has several teachers, so the
    key columns fit beside the plots at 1400 px."""
    key = key_frame(board, rows).drop(columns=["target", "role"])
    if rows["teacher"].replace("", pd.NA).dropna().nunique() <= 1:
        key = key.drop(columns=["teacher"])
    more = more_frame(board, rows)
    raw = {header(n, m): rows[n].values for n, m in board.columns.items() if n in rows}
    raw.update({f"{GAIN} [95% CI]": rows[GAIN].values, GAP: rows[GAP].values, SPEEDUP: rows[SPEEDUP].values})
    short = {header(n, m): (header(_short(n, m.unit), m), n) for n, m in board.columns.items()}
    names = {"model", "loss", "teacher"}

    def th(col: str, extra: str = "") -> str:
        text, tip = short.get(col, (col, _TIPS.get(col, "")))
        if col == f"{GAIN} [95% CI]":
            tip = f"{tip}; {board.gain_ci}"
        cls = " ".join(c for c in ("name" if col in names else "", extra) if c)
        title = f' title="{html.escape(tip)}"' if tip and tip != text else ""
        return f'<th class="{cls}"{title}>{html.escape(text)}</th>'

    def cell(col: str, text: str, i: int, extra: str = "") -> str:
        values = raw.get(col)
        sort = "" if values is None or pd.isna(values[i]) else f' data-v="{float(values[i])}"'
        cls = " ".join(c for c in ("name" if col in names else "", extra) if c)
        attr = f' class="{cls}"' if cls else ""
        return f"<td{sort}{attr}>{html.escape(str(text))}</td>"

    clips = [_clip(board, run_ids) for run_ids in rows["run_ids"]] if "run_ids" in rows else []
    listen = any(clips)
    # the player sits right after the names, where a wide table never scrolls it out of view
    names_end = list(key.columns).index("loss") + 1
    columns = [c for c in key.columns if c != "notes"]
    head = "".join(th(c) for c in columns[:names_end]) + (th("listen") if listen else "")
    head += "".join(th(c) for c in columns[names_end:]) + th("notes")
    head += "".join(th(c, "more") for c in more.columns)
    body = []
    for i, role in enumerate(rows["role"]):
        cells = [cell(c, key.iloc[i][c], i) for c in columns]
        if listen:
            cells.insert(names_end, f'<td class="name">{_player(clips[i])}</td>')
        note = key.iloc[i]["notes"]
        icon = f'<span class="note" title="{html.escape(note)}">⚠</span>' if note else ""
        cells.append(f'<td class="name">{icon}</td>')
        cells += [cell(c, more.iloc[i][c], i, "more") for c in more.columns]
        body.append(f'<tr class="{role}">' + "".join(cells) + "</tr>")
    return f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _clip(board: Board, run_ids: list[str]) -> Path | None:
    """The first clip of a row's first run, from the split the ranking uses when it has one."""
    if board.audio is None or not run_ids:
        return None
    files = [Path(p) for p in board.audio(run_ids[0]) if Path(p).exists()]
    split = (board.primary or "").split("/")[0]
    preferred = [p for p in files if p.parent.name == split]
    return (preferred or files or [None])[0]


def _player(clip: Path | None) -> str:
    """An inline player: the page stays one self-contained file."""
    if clip is None:
        return ""
    data = base64.b64encode(clip.read_bytes()).decode()
    mime = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}.get(
        clip.suffix.lower(), "application/octet-stream")
    return (f'<audio controls preload="none" title="{html.escape(clip.parent.name + "/" + clip.stem)}" '
            f'src="data:{mime};base64,{data}"></audio>')


def html_page(board: Board, title: str, images: dict[str, list[Path]]) -> str:
    """A self-contained page: per target, its table (key columns first, the rest behind a toggle,
    sortable by clicking a header, notes as ⚠ with a tooltip) with its Pareto fronts beside it."""
    sections = []
    for target in board.target_order:
        rows = board.frame[board.frame["target"] == target]
        if rows.empty:
            continue
        figures = "".join(
            f'<figure><img src="data:image/png;base64,{base64.b64encode(Path(p).read_bytes()).decode()}" '
            f'alt="{html.escape(Path(p).stem)}"><figcaption>{html.escape(Path(p).stem)}</figcaption></figure>'
            for p in images.get(target, []))
        teachers = sorted(t for t in rows["teacher"].unique() if t)
        taught = (f'<p class="legend">KD students learn from {html.escape(teachers[0])}.</p>'
                  if len(teachers) == 1 else "")
        sections.append(f'<h2>{html.escape(target)}</h2>{taught}<div class="section"><div class="tablebox">'
                        f'{_table(board, rows)}</div>' + (f'<div class="plots">{figures}</div>' if figures else "")
                        + "</div>")
    prov = board.frame[["provenance", *board.provenance_columns]].drop_duplicates() if not board.empty else pd.DataFrame()
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in board.notes)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>
<p class="legend">Ranked by <b>{html.escape(str(board.primary))}</b> within each target (mean ± std over n seeds).
<b>KD gain</b>: better-by than the same student trained without KD, with a {html.escape(board.gain_ci)}.
<b>gap to teacher</b>: student − teacher. Rows scored on less than {board.min_coverage:.0%} of the
test set are listed unranked. Click a header to sort. Read from {board.runs} evaluation runs.</p>
<label><input type="checkbox" id="showall"> show every column (other metrics, seeds, coverage, provenance)</label>
{"".join(sections) or "<p>no successful runs</p>"}
<h2>Provenance</h2><div class="tablebox">{prov.to_html(index=False, border=0, classes="prov")}</div>
<ul>{notes}</ul><script>{_SCRIPT}</script></body></html>"""


__all__ = ["COMPARISONS", "display", "fmt", "html_page", "key_frame", "render", "summary_text", "to_markdown"]
