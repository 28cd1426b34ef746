// The page of `blip serve`: every action posts the chosen image to the JSON API and shows the answer.
"use strict";

const $ = (id) => document.getElementById(id);
let image = null;      // the chosen File
let health = {};

function showError(message) { $("error").textContent = message || ""; }

function fixed(x) { return x === null || x === undefined ? "-" : Number(x).toFixed(4); }

async function post(url, form, button) {
  showError("");
  button.disabled = true;
  document.body.classList.add("busy");
  try {
    const response = await fetch(url, { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || JSON.stringify(body.detail || body));
    return body;
  } catch (e) {
    showError(e.message);
    return null;
  } finally {
    button.disabled = false;
    document.body.classList.remove("busy");
  }
}

function withImage() {
  const form = new FormData();
  form.append("image", image, image.name || "image");
  return form;
}

function enable() {
  const has = image !== null;
  $("caption-btn").disabled = !(has && health.caption);
  $("ask-btn").disabled = !(has && health.ask);
  $("match-btn").disabled = !(has && health.match);
  $("search-btn").disabled = !health.search;
  $("search-image-btn").disabled = !(has && health.search);
}

function choose(file) {
  if (!file) return;
  image = file;
  const preview = $("preview");
  preview.src = URL.createObjectURL(file);
  $("drop").classList.add("has-image");
  enable();
}

$("file").addEventListener("change", (e) => choose(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  choose(e.dataTransfer.files[0]);
});

$("caption-btn").addEventListener("click", async () => {
  const form = withImage();
  for (const [field, id] of [["strategy", "strategy"], ["num_beams", "num-beams"], ["min_length", "min-length"],
                             ["max_length", "max-length"], ["num_captions", "num-captions"]]) {
    form.append(field, $(id).value);
  }
  const body = await post("/api/caption", form, $("caption-btn"));
  if (!body) return;
  const list = $("captions");
  list.replaceChildren();
  for (const c of body.captions) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.className = "caption-text";
    text.textContent = c.text;
    const score = document.createElement("span");
    score.className = "note";
    score.textContent = ` log-prob ${fixed(c.logprob)} (mean ${fixed(c.mean_logprob)})` +
      (c.itm === null ? "" : `, ITM ${fixed(c.itm)}`);
    item.append(text, score);
    list.append(item);
  }
});

$("ask-btn").addEventListener("click", async () => {
  const form = withImage();
  form.append("question", $("question").value);
  if ($("answers").value.trim()) form.append("answers", $("answers").value);
  const body = await post("/api/ask", form, $("ask-btn"));
  if (!body) return;
  $("answer").textContent = body.answer;
  $("answer").title = `${body.ranked ? "ranking score" : "log-probability"} ${fixed(body.logprob)}`;
});

function showHeat(cam, text) {
  $("heat").src = cam.overlay;
  $("heat").alt = `Grad-CAM of "${text}"`;
  const tokens = $("heat-tokens");
  tokens.replaceChildren();
  const all = document.createElement("button");
  all.textContent = "all tokens";
  all.className = "active";
  all.addEventListener("click", () => { $("heat").src = cam.overlay; mark(all); });
  tokens.append(all);
  cam.tokens.forEach((token, i) => {
    const b = document.createElement("button");
    b.textContent = token;
    b.addEventListener("click", async () => {
      const form = withImage();
      form.append("text", text);
      form.append("layer", cam.layer);
      const body = await post("/api/gradcam", form, b);
      if (body) { $("heat").src = body.token_overlays[i]; mark(b); }
    });
    tokens.append(b);
  });
  $("heat-view").classList.add("shown");
}

function mark(active) {
  for (const b of $("heat-tokens").children) b.classList.toggle("active", b === active);
}

$("match-btn").addEventListener("click", async () => {
  const texts = $("texts").value.split("\n").map((t) => t.trim()).filter((t) => t);
  if (!texts.length) { showError("type at least one text"); return; }
  const form = withImage();
  for (const t of texts) form.append("text", t);
  const body = await post("/api/match", form, $("match-btn"));
  if (!body) return;
  const rows = $("match-results").tBodies[0];
  rows.replaceChildren();
  for (const r of body.results) {
    const tr = document.createElement("tr");
    const cells = [r.text, fixed(r.itm), fixed(r.itc)].map((v) => {
      const td = document.createElement("td");
      td.textContent = v;
      return td;
    });
    cells[1].className = "itm";
    cells[2].className = "itc";
    const heat = document.createElement("td");
    if (r.gradcam) {
      const img = document.createElement("img");
      img.src = r.gradcam.overlay;
      img.alt = `heat map of "${r.text}"`;
      img.addEventListener("click", () => showHeat(r.gradcam, r.text));
      heat.append(img);
    }
    tr.append(...cells, heat);
    rows.append(tr);
  }
  if (body.results[0].gradcam) showHeat(body.results[0].gradcam, body.results[0].text);
});

async function search(form, button) {
  form.append("top_k", "12");
  const body = await post("/api/search", form, button);
  if (!body) return;
  const hits = $("hits");
  hits.replaceChildren();
  for (const h of body.hits) {
    const div = document.createElement("div");
    div.className = "hit";
    const img = document.createElement("img");
    img.src = h.thumbnail;
    img.alt = h.key;
    const label = document.createElement("div");
    label.textContent = `${h.rank}. ${h.key.split("/").pop()} ITC ${fixed(h.itc)}` +
      (h.itm === null ? "" : ` ITM ${fixed(h.itm)}`);
    div.append(img, label);
    hits.append(div);
  }
}

$("search-btn").addEventListener("click", () => {
  const form = new FormData();
  form.append("text", $("query").value);
  search(form, $("search-btn"));
});
$("search-image-btn").addEventListener("click", () => search(withImage(), $("search-image-btn")));

fetch("/health").then((r) => r.json()).then((h) => {
  health = h;
  const on = ["caption", "ask", "match", "search"].filter((k) => h[k]);
  $("status").textContent = `ready: ${on.join(", ") || "nothing loaded"}` +
    (h.search ? ` (${h.index_size} images indexed)` : "");
  for (const k of ["caption", "ask", "match", "search"]) $(`${k}-panel`).hidden = !h[k];
  enable();
}).catch(() => { $("status").textContent = "server not reachable"; });
