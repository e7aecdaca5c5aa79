// mmsae view: the steering playground (plain JS; model output is set as textContent, never parsed as HTML).
"use strict";

function node(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// The prompt fields (image, indexed image, prompt text) of the steer form, for both requests.
function promptData() {
  const form = document.getElementById("steer");
  const data = new FormData(form);
  if (!document.getElementById("image-file").files.length) data.delete("image");
  return data;
}

async function post(url, data, status) {
  status.textContent = "running the model…";
  status.className = "muted";
  try {
    const r = await fetch(url, {method: "POST", body: data, credentials: "same-origin"});
    const body = await r.json();
    if (!r.ok) { status.textContent = `error: ${body.error}`; status.className = "error"; return null; }
    return body;
  } catch (e) {
    status.textContent = `error: ${e}`; status.className = "error"; return null;
  }
}

// A generated answer as clickable tokens: a click sets the attribution's target to that token, read after
// the answer's earlier tokens.
function showAnswer(box, answer) {
  box.replaceChildren();
  if (!answer.tokens.length) { box.appendChild(node("span", {class: "muted"}, "(nothing: the model ended at once)")); return; }
  for (const t of answer.tokens) {
    const s = node("span", {class: t.special ? "gen special" : "gen", title: `set the attribution target to ${JSON.stringify(t.piece)}`}, t.text);
    s.addEventListener("click", () => {
      document.getElementById("target").value = t.piece;
      document.getElementById("prefix").value = t.prefix;
      for (const g of document.querySelectorAll(".gen.on")) g.classList.remove("on");
      s.classList.add("on");
    });
    box.appendChild(s);
  }
  box.dataset.text = answer.text;
}

function setupSteer() {
  const form = document.getElementById("steer");
  if (!form) return;
  const status = document.getElementById("steer-status");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = await post("/api/steer", promptData(), status);
    if (!body) return;
    const ops = body.interventions.map(i => `${i.op} #${i.feature} ${i.value ?? i.scale ?? i.factor} on ${i.tokens}`);
    status.textContent = `layer ${body.layer}: ${ops.join(", ")}`;
    showAnswer(document.getElementById("out-unsteered"), body.unsteered);
    showAnswer(document.getElementById("out-steered"), body.steered);
    document.getElementById("same").textContent = body.identical ? "the two answers are identical" : "the answers differ";
    document.getElementById("prefix").value = "";
  });
}

function pct(v) { return `${(100 * v).toFixed(1)}%`; }

function showAttribution(body) {
  document.getElementById("attribution").hidden = false;
  const what = body.metric === "logit_diff" ? `logit(${body.target}) − logit(${body.baseline})` : `log p(${body.target})`;
  document.getElementById("attr-value").textContent =
    `d = ${what} = ${body.value.toFixed(4)} at token ${body.position} ${JSON.stringify(body.read_token)}, layer ${body.layer}`;
  const shares = document.querySelector("#shares tbody");
  shares.replaceChildren();
  for (const [k, v] of Object.entries(body.modality_share)) {
    const tr = node("tr", {"data-share": k});
    tr.appendChild(node("th", {}, k));
    const bar = node("td");
    const b = node("span", {class: `bar ${k}`});
    b.style.width = `${(200 * v).toFixed(1)}px`;
    bar.appendChild(b);
    tr.appendChild(bar);
    tr.appendChild(node("td", {class: "num"}, pct(v)));
    shares.appendChild(tr);
  }
  const rows = document.querySelector("#attr-features tbody");
  rows.replaceChildren();
  for (const f of body.features) {
    const tr = node("tr");
    const name = node("td");
    if (f.feature < 0) name.appendChild(node("span", {class: "muted"}, "error term"));
    else name.appendChild(node("a", {href: `/feature/${f.feature}`, class: "attr-feature"}, `#${f.feature}`));
    tr.appendChild(name);
    tr.appendChild(node("td", {class: "num"}, f.attribution.toFixed(4)));
    tr.appendChild(node("td", {class: "num"}, pct(f.share)));
    tr.appendChild(node("td", {}, f.explanation || ""));
    rows.appendChild(tr);
  }
  const positions = document.getElementById("attr-positions");
  positions.replaceChildren();
  for (const p of body.positions) {
    positions.appendChild(node("li", {}, `${p.modality} token ${p.position} ${JSON.stringify(p.token)}: ${p.total.toFixed(4)}`));
  }
  const box = document.getElementById("heatmap-box");
  box.hidden = !body.heatmap;
  if (body.heatmap) document.getElementById("heatmap").src = body.heatmap;
}

function setupAttribute() {
  const form = document.getElementById("attribute");
  if (!form) return;
  const status = document.getElementById("attr-status");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = promptData();
    for (const [k, v] of new FormData(form).entries()) data.set(k, v);
    const body = await post("/api/attribute", data, status);
    if (!body) return;
    status.textContent = `${body.n_features} active features`;
    showAttribution(body);
  });
}

document.addEventListener("DOMContentLoaded", () => { setupSteer(); setupAttribute(); });
