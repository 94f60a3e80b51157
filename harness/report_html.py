"""Render the merged conformance document as one self-contained HTML page.

The page embeds the document as JSON and draws the matrix, the filters, the
rule details and the headroom plot with inline JavaScript and SVG. It loads
nothing from the network.
"""

from __future__ import annotations

import json

from harness.results import clean_json

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>trainspec conformance matrix</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr.rule { cursor: pointer; }
tr.rule:hover td.id { text-decoration: underline; }
td.passed { background: #dff5df; } td.failed { background: #f9c7c7; } td.deviation { background: #fdf0c4; }
td.unsupported { background: #e4e4f4; } td.not_run { background: #eeeeee; color: #777; }
tr.details td { background: #fafafa; font-size: 12px; }
.controls { margin: 0.8em 0; } .controls label { margin-right: 1.2em; }
svg text { font-size: 11px; font-family: system-ui, sans-serif; }
code { font-size: 12px; }
</style>
</head>
<body>
<h1>trainspec conformance matrix</h1>
<p>Each cell shows the outcome of the canonical question and, after the slash, the native question, then
the largest absolute error over the rule's cases and, for random initializers, "h" and the largest law
statistic over its limit (above 1 fails). Click a rule for its statement, reference and each
framework's mapping.</p>
<div class="controls">
<label>Area <select id="area-filter"><option value="">all</option><option>initialization</option>
<option>losses</option><option>optimizers</option></select></label>
<label>Outcome <select id="outcome-filter"><option value="">all</option><option value="passed">passed</option>
<option value="failed">failed</option><option value="deviation">deviation</option>
<option value="unsupported">unsupported</option><option value="not_run">not run</option></select></label>
<span id="row-count"></span>
</div>
<table id="matrix"><thead></thead><tbody></tbody></table>
<h2>Error headroom</h2>
<p>Largest error divided by the allowed error over each rule's passed cases, on a log scale: a bar
reaching the line at 1 would fail.</p>
<div id="plot"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const marks = {passed: "pass", failed: "FAIL", deviation: "dev", unsupported: "unsup", not_run: "n/r"};
const runs = data.runs;

function text(tag, content, attributes) {
  const element = document.createElement(tag);
  if (content !== undefined) element.textContent = content;
  for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, value);
  return element;
}

// The report stores infinite and NaN values as the strings "inf", "-inf" and "nan".
function toNumber(value) {
  if (value === "inf") return Infinity;
  if (value === "-inf") return -Infinity;
  return Number(value);
}

function formatError(value) {
  return value === null || value === undefined ? "-" : toNumber(value).toExponential(1);
}

function buildHeader() {
  const row = text("tr");
  row.appendChild(text("th", "rule"));
  row.appendChild(text("th", "area"));
  for (const run of runs) {
    const partial = !run.complete && run.source !== "no results record";
    row.appendChild(text("th", run.key + (partial ? " (partial run)" : "")));
  }
  document.querySelector("#matrix thead").appendChild(row);
}

function detailsRow(ruleId) {
  const rule = data.rules[ruleId];
  const row = text("tr", undefined, {class: "details", "data-details-for": ruleId});
  row.hidden = true;
  const cell = text("td", undefined, {colspan: String(runs.length + 2)});
  cell.appendChild(text("p", rule.statement, {class: "statement"}));
  cell.appendChild(text("p", "Reference: " + rule.reference + "; tolerance class: " + rule.tolerance));
  const list = text("ul");
  for (const [framework, profile] of Object.entries(data.profiles)) {
    const mapping = profile.mapping[ruleId] || {};
    const item = text("li");
    item.appendChild(text("b", framework + ": "));
    const canonical = mapping.canonical || "the native API as the adapter configures it";
    item.appendChild(text("span", "canonical: " + canonical));
    if (mapping.native_default) item.appendChild(text("span", "; native default: " + mapping.native_default));
    for (const deviation of profile.deviations.filter(d => d.rule === ruleId)) {
      const line = "deviation (" + deviation.versions + "): " + deviation.size + ". " + deviation.reason;
      item.appendChild(text("div", line));
    }
    list.appendChild(item);
  }
  cell.appendChild(list);
  row.appendChild(cell);
  return row;
}

function buildBody() {
  const body = document.querySelector("#matrix tbody");
  for (const [ruleId, cells] of Object.entries(data.matrix)) {
    const rule = data.rules[ruleId];
    const row = text("tr", undefined, {class: "rule", "data-rule": ruleId, "data-area": rule.area});
    row.appendChild(text("td", ruleId, {class: "id"}));
    row.appendChild(text("td", rule.area));
    const outcomes = [];
    for (const run of runs) {
      const cell = cells[run.key];
      const main = cell.canonical || cell.all;
      let label = marks[main.outcome];
      if (cell.native) label += " / " + marks[cell.native.outcome];
      outcomes.push(cell.all.outcome, main.outcome, (cell.native || main).outcome);
      let error = formatError(cell.all.max_abs_error);
      if (cell.all.law_headroom !== null && cell.all.law_headroom !== undefined) {
        error += ", h " + toNumber(cell.all.law_headroom).toFixed(2);
      }
      const td = text("td", label + " " + error, {class: cell.all.outcome});
      td.title = JSON.stringify(cell.all.counts);
      row.appendChild(td);
    }
    row.dataset.outcomes = outcomes.join(" ");
    const details = detailsRow(ruleId);
    row.addEventListener("click", () => { details.hidden = !details.hidden; });
    body.appendChild(row);
    body.appendChild(details);
  }
}

function applyFilters() {
  const area = document.getElementById("area-filter").value;
  const outcome = document.getElementById("outcome-filter").value;
  let shown = 0;
  for (const row of document.querySelectorAll("tr.rule")) {
    const areaMatches = !area || row.dataset.area === area;
    const outcomeMatches = !outcome || row.dataset.outcomes.split(" ").includes(outcome);
    const visible = areaMatches && outcomeMatches;
    row.hidden = !visible;
    if (!visible) document.querySelector('tr[data-details-for="' + row.dataset.rule + '"]').hidden = true;
    if (visible) shown += 1;
  }
  document.getElementById("row-count").textContent = shown + " of " + Object.keys(data.matrix).length + " rules shown";
}

function buildPlot() {
  const svgNamespace = "http://www.w3.org/2000/svg";
  const rules = Object.keys(data.matrix);
  const barHeight = 5, groupHeight = barHeight * runs.length + 6, left = 190, width = 420;
  const height = rules.length * groupHeight + 30;
  const svg = document.createElementNS(svgNamespace, "svg");
  svg.setAttribute("width", String(left + width + 40));
  svg.setAttribute("height", String(height));
  const colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
  // x axis: log10(headroom) from -8 to 0.
  // Headroom above 1.5 (a failed or deviating check, or "inf") is drawn at 1.5, just past the line at 1.
  const x = value => left + Math.max(0, (Math.log10(Math.min(value, 1.5)) + 8) / 8) * width;
  function add(tag, attributes, content) {
    const element = document.createElementNS(svgNamespace, tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
    if (content !== undefined) element.textContent = content;
    svg.appendChild(element);
  }
  rules.forEach((ruleId, index) => {
    const top = index * groupHeight;
    add("text", {x: 0, y: top + groupHeight / 2 + 4}, ruleId);
    runs.forEach((run, runIndex) => {
      const cell = data.matrix[ruleId][run.key].all;
      const values = [cell.headroom, cell.law_headroom].filter(v => v !== null && v !== undefined).map(toNumber);
      const headroom = values.length ? Math.max(...values) : 0;
      if (!(headroom > 0)) return;
      add("rect", {x: left, y: top + runIndex * barHeight + 3, width: Math.max(1, x(headroom) - left),
                   height: barHeight - 1, fill: colors[runIndex % colors.length], class: "bar"},
          undefined);
    });
  });
  add("line", {x1: x(1), x2: x(1), y1: 0, y2: height - 25, stroke: "#c00"});
  for (let power = -8; power <= 0; power += 2) {
    add("text", {x: x(Math.pow(10, power)) - 10, y: height - 10}, "1e" + power);
  }
  runs.forEach((run, runIndex) => {
    add("rect", {x: left + width + 5, y: runIndex * 14, width: 10, height: 10, fill: colors[runIndex % colors.length]});
  });
  document.getElementById("plot").appendChild(svg);
  const legend = text("ul");
  runs.forEach((run, runIndex) => legend.appendChild(text("li", "color " + (runIndex + 1) + ": " + run.key)));
  document.getElementById("plot").appendChild(legend);
}

buildHeader();
buildBody();
buildPlot();
document.getElementById("area-filter").addEventListener("change", applyFilters);
document.getElementById("outcome-filter").addEventListener("change", applyFilters);
applyFilters();
</script>
</body>
</html>
"""


def render_html(document):
    """Return the HTML page for the merged ``document``."""
    payload = json.dumps(clean_json(document), default=str, allow_nan=False).replace("</", "<\\/")
    return PAGE.replace("__DATA__", payload)
