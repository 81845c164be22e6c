// "Teach it your moods": the tracks whose labels would help most (GET /label/next), each
// played here and answered with one click (POST /label). Uses app.js's helpers and state.
"use strict";

const LABEL_BATCH = 4;          // tracks shown at once
const LABEL_MAX = 12;           // the most GET /label/next gives
const labelState = { skipped: new Set(), busy: false };

function setLabelStatus(text, isError = false) {
  const s = $("label-status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

async function loadLabelPanel() {
  const list = $("label-tracks");
  const n = Math.min(LABEL_MAX, LABEL_BATCH + labelState.skipped.size);
  try {
    const data = await api(`/label/next?n=${n}`);
    const tracks = data.tracks.filter((t) => !labelState.skipped.has(t.track_id)).slice(0, LABEL_BATCH);
    $("label-count").textContent = `${data.labelled.toLocaleString()} tracks labelled`;
    if (data.refusal) setLabelStatus(`labels cannot be saved: ${data.refusal}`, true);
    list.replaceChildren();
    if (!tracks.length) {
      list.append(el("li", { class: "empty", text: "nothing left to ask: every track is labelled or skipped" }));
    }
    for (const t of tracks) list.append(labelCard(t, !data.refusal));
  } catch (err) {
    list.replaceChildren(el("li", { class: "empty", text: err.message }));
  }
}

function labelCard(t, writable) {
  const li = el("li", { class: "label-item", "data-track-id": t.track_id });
  const buttons = el("div", { class: "label-moods", role: "group", "aria-label": `mood of ${displayName(t)}` });
  for (const m of state.moods) {
    const b = el("button", { type: "button", class: "label-mood", "data-mood": m, text: m,
      onclick: () => giveLabel(t, m, li) });
    b.style.borderColor = moodColor(m);
    b.style.color = moodColor(m);
    b.disabled = !writable;
    buttons.append(b);
  }
  buttons.append(el("button", { type: "button", class: "label-skip", text: "skip",
    onclick: () => { labelState.skipped.add(t.track_id); loadLabelPanel(); } }));
  li.append(
    el("div", { class: "name", text: displayName(t), title: `${displayName(t)}\n${t.track_id}` }),
    el("div", { class: "label-guess" }, document.createTextNode("the model thinks "), moodBadge(t.mood),
      document.createTextNode(" "), moodSource(t)),
    player(t), buttons);
  return li;
}

async function giveLabel(t, mood, li) {
  if (labelState.busy) return;
  labelState.busy = true;
  const buttons = [...li.querySelectorAll("button")];
  for (const b of buttons) b.disabled = true;
  try {
    await api("/label", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ track_id: t.track_id, mood }),
    });
    setLabelStatus(`${displayName(t)}: ${mood}, saved; the next suggestions and queries use it`);
    await loadLabelPanel();
    searchTracks();  // the list shows moods too
    if (state.seed && state.target) runQuery();  // its ranking may have changed
  } catch (err) {
    setLabelStatus(err.message, true);
    for (const b of buttons) b.disabled = false;
  } finally {
    labelState.busy = false;
  }
}

pageReady.then(() => { if (state.moods.length) loadLabelPanel(); });
