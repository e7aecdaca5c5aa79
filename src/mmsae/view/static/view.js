// mmsae view: the little plain JS the pages need (no framework, no build step, no CDN).
"use strict";

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;  // textContent: model output is never parsed as HTML
  return e;
}

// Feature page: heatmap / masked / plain for every top image at once.
function setupToggle() {
  const toggle = document.getElementById("toggle");
  if (!toggle) return;
  toggle.addEventListener("click", (ev) => {
    const view = ev.target.dataset && ev.target.dataset.view;
    if (!view) return;
    for (const b of toggle.querySelectorAll("button")) b.classList.toggle("on", b.dataset.view === view);
    for (const img of document.querySelectorAll("img.example")) {
      img.src = `/img/${img.dataset.feature}/${img.dataset.rank}/${view}.png`;
    }
  });
}

function showFired(title, features) {
  const box = document.getElementById("fired");
  box.replaceChildren(el("h3", {}, title));
  if (!features.length) { box.appendChild(el("p", {class: "muted"}, "no feature fires here")); return; }
  const list = el("ol", {id: "fired-list"});
  for (const [f, v] of features) {
    const li = el("li");
    li.appendChild(el("a", {href: `/feature/${f}`, class: "fired-feature"}, `#${f}`));
    li.appendChild(document.createTextNode(` ${v.toFixed(3)}`));
    list.appendChild(li);
  }
  box.appendChild(list);
}

function render(result) {
  const canvas = document.getElementById("canvas");
  canvas.replaceChildren();
  const img = el("img", {src: result.image, alt: "analysed image", id: "analysed"});
  canvas.appendChild(img);
  const peak = Math.max(1e-9, ...result.tokens.filter(t => t.box).map(t => (t.features[0] || [0, 0])[1]));
  for (const t of result.tokens) {
    if (!t.box) continue;
    const [x0, y0, x1, y1] = t.box;
    const top = (t.features[0] || [0, 0])[1];
    const d = el("div", {class: "patch", title: `token ${t.i}`, "data-token": t.i});
    d.style.left = `${100 * x0 / result.width}%`; d.style.top = `${100 * y0 / result.height}%`;
    d.style.width = `${100 * (x1 - x0) / result.width}%`; d.style.height = `${100 * (y1 - y0) / result.height}%`;
    d.style.background = `rgba(255, 110, 0, ${(0.5 * top / peak).toFixed(2)})`;
    d.addEventListener("click", () => showFired(`patch (token ${t.i})`, t.features));
    canvas.appendChild(d);
  }
  const strip = document.getElementById("tokens");
  strip.replaceChildren();
  let images = 0;
  for (const t of result.tokens) {
    if (t.modality === "image") { images += 1; continue; }
    if (images) { strip.appendChild(el("span", {class: "tok image"}, `[${images} image tokens]`)); images = 0; }
    const s = el("span", {class: `tok ${t.modality}`, "data-token": t.i}, t.text);
    s.addEventListener("click", () => showFired(`token ${t.i} ${JSON.stringify(t.text)}`, t.features));
    strip.appendChild(s);
  }
  if (images) strip.appendChild(el("span", {class: "tok image"}, `[${images} image tokens]`));
}

function setupAnalyze() {
  const form = document.getElementById("analyze");
  if (!form) return;
  const status = document.getElementById("status");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const file = document.getElementById("image-file");
    if (!file.files.length) data.delete("image");
    status.textContent = "running the model…";
    try {
      const r = await fetch("/api/analyze", {method: "POST", body: data, credentials: "same-origin"});
      const body = await r.json();
      if (!r.ok) { status.textContent = `error: ${body.error}`; status.className = "error"; return; }
      status.textContent = `${body.tokens.length} tokens at layer ${body.layer}`;
      status.className = "muted";
      render(body);
    } catch (e) {
      status.textContent = `error: ${e}`; status.className = "error";
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { setupToggle(); setupAnalyze(); });
