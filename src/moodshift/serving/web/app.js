// moodshift web page: plain JS, no build step, no network beyond this server.
// Every value from the API goes into the DOM through textContent, never innerHTML.
"use strict";

const PALETTE = ["#e4572e", "#2e86ab", "#f2a541", "#6a4c93", "#3bb273", "#c2185b", "#00897b", "#795548"];
const state = {
  info: null,
  moods: [],
  seed: null,          // record of the chosen seed track
  target: null,        // target mood
  page: 1,
  pages: 1,
  mapPoints: [],
  last: null,          // last /query response
};

const $ = (id) => document.getElementById(id);

function moodColor(mood) {
  const i = state.moods.indexOf(mood);
  return i < 0 ? "#888" : PALETTE[i % PALETTE.length];
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

async function api(path, options) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    let msg = body.detail;
    if (Array.isArray(msg)) msg = msg.map((d) => d.msg).join("; ");
    throw new Error(msg || `HTTP ${res.status}`);
  }
  return body;
}

function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

// ------------------------------------------------------------------ labels
function moodBadge(mood) {
  const b = el("span", { class: "badge", text: mood || "?" });
  b.style.background = moodColor(mood);
  return b;
}

function tagList(rec) {
  const box = el("div", { class: "tags" });
  for (const g of rec.genre || []) box.append(el("span", { class: "tag genre", text: g }));
  for (const i of rec.instruments || []) box.append(el("span", { class: "tag", text: i }));
  return box;
}

function displayName(rec) {
  if (rec.title) return rec.artist ? `${rec.title} \u2014 ${rec.artist}` : rec.title;
  return rec.artist ? `${rec.track_id} \u00b7 ${rec.artist}` : rec.track_id;
}

function player(rec, id) {
  if (!rec.audio_url) return el("div", { class: "no-audio", text: "no audio file for this track" });
  const a = el("audio", { controls: "", preload: "metadata", src: rec.audio_url });
  if (id) a.id = id;
  return a;
}

// ------------------------------------------------------------------ seed search
async function searchTracks() {
  const params = new URLSearchParams({ page: String(state.page), page_size: "12" });
  const q = $("search").value.trim();
  if (q) params.set("q", q);
  if ($("search-mood").value) params.set("mood", $("search-mood").value);
  if ($("search-genre").value) params.set("genre", $("search-genre").value);
  const list = $("search-results");
  try {
    const data = await api(`/tracks?${params}`);
    state.pages = data.pages;
    list.replaceChildren();
    if (!data.items.length) list.append(el("li", { class: "empty", text: "no tracks match" }));
    for (const rec of data.items) {
      const li = el("li", { tabindex: "0", "data-track-id": rec.track_id, role: "button" },
        el("div", {},
          el("div", { class: "name", text: displayName(rec), title: displayName(rec) }),
          el("div", { class: "sub", text: (rec.genre || []).join(", ") })),
        moodBadge(rec.mood));
      if (state.seed && state.seed.track_id === rec.track_id) li.classList.add("selected");
      li.addEventListener("click", () => chooseSeed(rec));
      li.addEventListener("keydown", (e) => { if (e.key === "Enter") chooseSeed(rec); });
      list.append(li);
    }
    $("page-info").textContent =
      `${data.total} ${data.total === 1 ? "track" : "tracks"} \u00b7 page ${data.page}/${data.pages}`;
    $("prev-page").disabled = data.page <= 1;
    $("next-page").disabled = data.page >= data.pages;
  } catch (err) {
    list.replaceChildren(el("li", { class: "empty", text: err.message }));
  }
}

function chooseSeed(rec) {
  state.seed = rec;
  for (const li of $("search-results").children) {
    li.classList.toggle("selected", li.dataset.trackId === rec.track_id);
  }
  const card = $("seed-card");
  card.classList.remove("empty");
  card.replaceChildren(
    el("div", { class: "title", text: displayName(rec) }),
    el("div", { id: "seed-mood" }, ...seedMoodLine(rec)),
    tagList(rec),
    player(rec, "seed-audio"));
  $("go").disabled = !state.target;
  $("journey").disabled = !state.target;
  if (state.target) runQuery();
  else setStatus("now choose a target mood");
  drawMap();
}

// The seed card's mood: its label, or the tagger's guess with its probability (never "?").
function seedMoodLine(rec) {
  return [moodBadge(rec.mood), document.createTextNode(" "), moodSource(rec),
    document.createTextNode(" "), el("span", { class: "sub", text: rec.track_id })];
}

// ------------------------------------------------------------------ query
function chooseMood(mood) {
  state.target = mood;
  for (const chip of $("mood-chips").children) {
    const on = chip.dataset.mood === mood;
    chip.setAttribute("aria-checked", String(on));
    chip.style.background = on ? moodColor(chip.dataset.mood) : "#fff";
    chip.style.borderColor = moodColor(chip.dataset.mood);
    chip.style.color = on ? "#fff" : moodColor(chip.dataset.mood);
  }
  $("go").disabled = !state.seed;
  $("journey").disabled = !state.seed || !state.target;
  if (state.seed) runQuery();
}

let querySeq = 0;
async function runQuery() {
  if (!state.seed || !state.target) return;
  const body = {
    track_id: state.seed.track_id,
    target_mood: state.target,
    k: Number($("k").value),
    evidence: $("evidence").value,
  };
  // Until the slider is moved, the server uses the strengths chosen on validation.
  if (state.strengthTouched) body.strength = Number($("strength").value);
  if ($("filter-genre").value) body.filters = { genre: $("filter-genre").value };
  const mine = ++querySeq;
  setStatus("searching\u2026");
  try {
    const data = await api("/query", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (mine !== querySeq) return;  // a newer query is on its way
    state.last = data;
    if (data.seed && state.seed && data.seed.track_id === state.seed.track_id) {
      // What the query used: labels given since the seed was chosen included.
      $("seed-mood").replaceChildren(...seedMoodLine({ ...data.seed, mood: data.source_mood,
        mood_source: data.source_mood_source, mood_probability: data.source_mood_probability }));
    }
    renderResults(data);
    const hits = data.results.filter((r) => r.mood === data.target_mood).length;
    setStatus(`${data.results.length} results in ${data.took_ms.toFixed(1)} ms (${data.index} index) \u00b7 ` +
      `${hits}/${data.results.length} are ${data.target_mood}`);
    drawMap();
  } catch (err) {
    if (mine === querySeq) setStatus(err.message, true);
  }
}

// Where a result's mood came from: the catalogue's label, or the model's tagger.
function moodSource(r) {
  if (r.mood_source === "predicted") {
    const pct = Math.round((r.mood_probability || 0) * 100);
    return el("span", { class: "mood-source predicted", title: "predicted by the model's mood tagger",
      text: `predicted ${pct}%` });
  }
  if (r.mood_source === "label") {
    return el("span", { class: "mood-source label", title: "the catalogue's label", text: "label" });
  }
  return el("span", { class: "mood-source", text: "" });
}

function renderResults(data) {
  const list = $("results");
  list.replaceChildren();
  if (!data.results.length) {
    list.append(el("li", { class: "empty", text: "no tracks match these filters" }));
    return;
  }
  for (const r of data.results) {
    const pct = Math.max(0, Math.min(100, (r.score + 1) * 50));
    const bar = el("div", { class: "bar" }, el("span"));
    bar.firstChild.style.width = `${pct.toFixed(1)}%`;
    list.append(el("li", { class: "result", "data-track-id": r.track_id },
      el("div", { class: "result-head" },
        el("span", { class: "rank", text: `${r.rank}.` }),
        el("span", { class: "name", text: displayName(r), title: `${displayName(r)}\n${r.track_id}` }),
        moodBadge(r.mood), moodSource(r)),
      tagList(r),
      el("div", { class: "sim" }, el("span", { text: "similarity" }), bar,
        el("span", { text: r.score.toFixed(3) })),
      player(r)));
  }
}

// ------------------------------------------------------------------ journey
// The seed's mood as the server knows it: its label, or the tagger's guess and its probability.
function seedMood(seed) {
  if (!seed || !seed.mood) return "an unknown mood";
  if (seed.mood_source !== "predicted") return seed.mood;
  return `${seed.mood} (predicted ${Math.round((seed.mood_probability || 0) * 100)}%)`;
}

async function runJourney() {
  if (!state.seed || !state.target) return;
  const mine = ++querySeq;
  setStatus("building a mood journey\u2026");
  try {
    const data = await api("/playlist", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ track_id: state.seed.track_id, to: state.target,
        length: Number($("k").value) }),
    });
    if (mine !== querySeq) return;
    const list = $("results");
    list.replaceChildren();
    data.tracks.forEach((t, i) => {
      list.append(el("li", { class: "result journey-item", "data-track-id": t.track_id },
        el("div", { class: "result-head" },
          el("span", { class: "rank", text: `${i + 1}.` }),
          el("span", { class: "name", text: displayName(t), title: `${displayName(t)}\n${t.track_id}` }),
          moodBadge(t.mood), moodSource(t)),
        el("div", { class: "sim" },
          el("span", { text: `strength ${t.strength.toFixed(2)} \u00b7 p(${t.toward}) ${t.p_target.toFixed(2)}` })),
        player(t)));
    });
    setStatus(`mood journey: ${data.tracks.length} tracks from ${seedMood(data.seed)} to ${data.to} ` +
      `in ${data.took_ms.toFixed(0)} ms`);
  } catch (err) {
    if (mine === querySeq) setStatus(err.message, true);
  }
}

// ------------------------------------------------------------------ map
function drawMap() {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = Math.round(w * 0.75);
  if (canvas.width !== Math.round(w * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const pts = state.mapPoints;
  const q = state.last;
  const all = pts.map((p) => [p[0], p[1]]);
  if (q) all.push(q.map.seed, q.map.query, ...q.map.results);
  if (!all.length) return;
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const [x, y] of all) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const pad = 18;
  const sx = (w - 2 * pad) / ((x1 - x0) || 1);
  const sy = (h - 2 * pad) / ((y1 - y0) || 1);
  const s = Math.min(sx, sy);
  const ox = pad + ((w - 2 * pad) - s * (x1 - x0)) / 2;
  const oy = pad + ((h - 2 * pad) - s * (y1 - y0)) / 2;
  const X = (x) => ox + (x - x0) * s;
  const Y = (y) => h - (oy + (y - y0) * s);

  // Catalogue sample: faint dots coloured by mood.
  ctx.globalAlpha = 0.3;
  for (const p of pts) {
    ctx.fillStyle = p[2] >= 0 ? PALETTE[p[2] % PALETTE.length] : "#999";
    ctx.beginPath(); ctx.arc(X(p[0]), Y(p[1]), 2.2, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
  if (!q) return;

  // Seed -> query arrow.
  const [sxp, syp] = [X(q.map.seed[0]), Y(q.map.seed[1])];
  const [qxp, qyp] = [X(q.map.query[0]), Y(q.map.query[1])];
  ctx.strokeStyle = "#1f2328"; ctx.lineWidth = 1.5; ctx.setLineDash([5, 4]);
  ctx.beginPath(); ctx.moveTo(sxp, syp); ctx.lineTo(qxp, qyp); ctx.stroke(); ctx.setLineDash([]);

  // Results, numbered by rank.
  q.results.forEach((r, i) => {
    const [x, y] = q.map.results[i];
    ctx.fillStyle = moodColor(r.mood);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.arc(X(x), Y(y), 7, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    ctx.fillStyle = "#fff"; ctx.font = "bold 9px system-ui, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(String(r.rank), X(x), Y(y) + 0.5);
  });

  // Seed: ringed circle in its mood colour.
  ctx.fillStyle = moodColor(q.source_mood); ctx.strokeStyle = "#1f2328"; ctx.lineWidth = 2.5;
  ctx.beginPath(); ctx.arc(sxp, syp, 9, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  // Query: diamond in the target colour.
  ctx.fillStyle = moodColor(q.target_mood); ctx.strokeStyle = "#1f2328"; ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(qxp, qyp - 10); ctx.lineTo(qxp + 10, qyp); ctx.lineTo(qxp, qyp + 10); ctx.lineTo(qxp - 10, qyp);
  ctx.closePath(); ctx.fill(); ctx.stroke();
}

function renderLegend() {
  const box = $("legend");
  box.replaceChildren();
  for (const m of state.moods) {
    const dot = el("i"); dot.style.background = moodColor(m);
    box.append(el("span", {}, dot, document.createTextNode(m)));
  }
  box.append(el("span", { text: "\u25cf ringed = seed" }), el("span", { text: "\u25c6 = shifted query" }),
    el("span", { text: "numbers = results" }));
}

// ------------------------------------------------------------------ start
async function init() {
  try {
    state.info = await api("/api/info");
  } catch (err) {
    setStatus(`cannot reach the server: ${err.message}`, true);
    return;
  }
  const info = state.info;
  state.moods = info.moods;
  // Start the slider at the strength the model was tuned for on validation.
  if (typeof info.default_strength === "number") {
    $("strength").value = info.default_strength;
    $("strength-value").textContent = info.default_strength.toFixed(2);
  }
  $("catalog-info").textContent =
    `${info.n_tracks.toLocaleString()} tracks \u00b7 ${info.dim}-d ${info.embedder.name || ""} embeddings \u00b7 ` +
    `${info.index.kind} index`;
  for (const m of info.moods) {
    $("search-mood").append(el("option", { value: m, text: m }));
    $("mood-chips").append(el("button", {
      type: "button", class: "chip", role: "radio", "aria-checked": "false", "data-mood": m, text: m,
      onclick: () => chooseMood(m),
    }));
  }
  for (const g of (info.filters && info.filters.genre) || []) {
    $("search-genre").append(el("option", { value: g, text: g }));
    $("filter-genre").append(el("option", { value: g, text: g }));
  }
  chooseMoodStyles();
  renderLegend();

  const research = debounce(() => { state.page = 1; searchTracks(); }, 200);
  $("search").addEventListener("input", research);
  $("search-mood").addEventListener("change", research);
  $("search-genre").addEventListener("change", research);
  $("prev-page").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); searchTracks(); });
  $("next-page").addEventListener("click", () => { state.page = Math.min(state.pages, state.page + 1); searchTracks(); });
  const requery = debounce(runQuery, 150);
  $("evidence").addEventListener("change", () => { if (state.seed) runQuery(); });
  $("journey").addEventListener("click", runJourney);
  $("strength").addEventListener("input", () => {
    state.strengthTouched = true;
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
    requery();
  });
  $("k").addEventListener("change", runQuery);
  $("filter-genre").addEventListener("change", runQuery);
  $("go").addEventListener("click", runQuery);
  window.addEventListener("resize", debounce(drawMap, 100));

  searchTracks();
  try {
    const map = await api("/map");
    state.mapPoints = map.points;
  } catch (err) {
    state.mapPoints = [];
  }
  drawMap();
}

function chooseMoodStyles() {
  for (const chip of $("mood-chips").children) {
    chip.style.borderColor = moodColor(chip.dataset.mood);
    chip.style.color = moodColor(chip.dataset.mood);
  }
}

// label.js waits for it: the moods come from /api/info.
const pageReady = init();
