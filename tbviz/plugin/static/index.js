// The ACTIVATIONS tab of TensorBoard: tbviz's feature-map pictures, layers x epochs.
//
// TensorBoard loads this ES module in an iframe and calls render(). Plain
// JavaScript, no build step, no third-party code. Everything comes from this
// plugin's routes (see tbviz/plugin/server.py): /runs, /run, /picture and
// /difference. Layer and run names are data, shown with textContent only.
//
// Views: "Grid" (layers x epochs for one run and one probe image), "Slider"
// (one epoch slider and play for every layer), "Compare" (two epochs of one
// run or of two runs, with a difference picture) and "Change" (the
// change/<layer> heat map). Above them, the run's layer-health findings
// (which layer is dead, saturated, exploding... since which epoch), each one
// click away from its layer at its onset; the grid and the heat map mark the
// epochs a finding holds at. The page polls for new epochs (live runs).

const POLL_MS = 5000;
const PLAY_MS = 700;
const MAX_GRID_COLUMNS = 12;
const VIEWS = ["grid", "slider", "compare", "change"];
const VIEW_TITLES = {grid: "Layers × epochs", slider: "One slider", compare: "Compare", change: "Change heat map"};

const state = {
  runs: [],
  run: null,          // name of the current run
  data: new Map(),    // run name -> /run answer
  probe: 0,
  filter: "",
  view: "grid",
  stride: 0,          // grid: 0 = automatic
  thumb: 160,         // grid thumbnail size, px
  position: -1,       // slider: index into the run's steps; -1 = the last one
  playing: null,      // slider: interval id while playing
  compare: {runA: null, stepA: null, runB: null, stepB: null},
  notices: [],        // from /runs, and failures to reach the server
  failed: new Set(),  // runs whose /run failed: not asked again until /runs lists them anew
};

let ui = null;

export async function render() {
  const css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = "style.css";
  document.head.appendChild(css);
  ui = buildShell();
  document.body.appendChild(ui.root);
  await refresh();
  schedulePoll();
}

// ---------------------------------------------------------------- data

async function getJson(route, params) {
  const response = await fetch(route + (params ? "?" + new URLSearchParams(params) : ""));
  const text = await response.text();
  if (!response.ok) throw new Error(text || `${route}: HTTP ${response.status}`);
  return JSON.parse(text);
}

// Adds to each layer of a /run answer its change values and findings by step.
function prepare(data) {
  for (const layer of data.layers) {
    layer.changeAt = new Map(layer.steps.map((step, i) => [step, layer.change[i]]));
    layer.colourAt = new Map(layer.steps.map((step, i) => [step, layer.change_colour[i]]));
    layer.healthAt = new Map(layer.steps.map((step, i) => [step, (layer.health ?? [])[i] ?? []]));
  }
  return data;
}

function pictureUrl(run, layer, step, sample) {
  const token = state.data.get(run)?.token ?? "";
  return "picture?" + new URLSearchParams({run, layer, step, sample, v: token});
}

function differenceUrl(runA, stepA, runB, stepB, layer, sample) {
  const v = (state.data.get(runA)?.token ?? "") + (state.data.get(runB)?.token ?? "");
  return "difference?" + new URLSearchParams({run: runA, step: stepA, run_b: runB, step_b: stepB, layer, sample, v});
}

// Fetches /runs and the runs on screen; re-renders when anything changed.
async function refresh() {
  const notices = [];
  let changed = false;
  const versions = [...state.data.values()].map((d) => d.version).join();
  try {
    const listing = await getJson("runs");
    notices.push(...listing.notices);
    if (JSON.stringify(listing.runs) !== JSON.stringify(state.runs)) {
      state.runs = listing.runs;
      state.failed.clear();
      changed = true;
    }
    if (!state.runs.includes(state.run)) {
      state.run = state.runs[0] ?? null;
      changed = true;
    }
    // Only the runs on screen, and only when the server read something new in them.
    const wanted = new Set([state.run, state.compare.runA, state.compare.runB].filter((r) => state.runs.includes(r)));
    for (const run of wanted) {
      if (state.data.get(run)?.version !== listing.versions[run]) {
        state.data.set(run, prepare(await getJson("run", {run})));
      }
    }
  } catch (error) {
    notices.push(`Could not reach the server: ${error.message}`);
  }
  if (JSON.stringify(notices) !== JSON.stringify(state.notices)) {
    state.notices = notices;
    changed = true;
  }
  changed ||= versions !== [...state.data.values()].map((d) => d.version).join();
  ui.live.textContent = `live · checked ${new Date().toLocaleTimeString()}`;
  if (changed) draw();
}

function schedulePoll() {
  setTimeout(async () => {
    if (!document.hidden) await refresh();
    schedulePoll();
  }, POLL_MS);
}

// ---------------------------------------------------------------- helpers

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key === "className") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function currentData() {
  return state.run ? state.data.get(state.run) : null;
}

function visibleLayers(data) {
  const needle = state.filter.trim().toLowerCase();
  return data.layers.filter((layer) => !needle || layer.name.toLowerCase().includes(needle));
}

function thumbnail(url, layer, step, caption) {
  const scale = Math.min(1, state.thumb / Math.max(layer.width, layer.height));
  const image = el("img", {
    loading: "lazy", decoding: "async", alt: caption, title: caption,
    width: Math.max(1, Math.round(layer.width * scale)),
    height: Math.max(1, Math.round(layer.height * scale)),
  });
  image.src = url;
  image.dataset.layer = layer.name;
  image.dataset.step = String(step);
  image.addEventListener("click", () => zoom(url, caption));
  return image;
}

function zoom(url, caption) {
  ui.zoomImage.src = url;
  ui.zoomCaption.textContent = caption;
  ui.zoom.hidden = false;
}

function fillSelect(select, options, selected) {
  select.replaceChildren(...options.map(([value, label]) => el("option", {value, text: label})));
  if (selected !== undefined && selected !== null) select.value = String(selected);
}

// ---------------------------------------------------------------- the shell

function buildShell() {
  const run = el("select", {id: "run", onchange: () => { state.run = run.value; stopPlaying(); state.position = -1; loadAndDraw(state.run); }});
  const probe = el("select", {id: "probe", onchange: () => { state.probe = Number(probe.value); draw(); }});
  const filter = el("input", {id: "filter", type: "search", placeholder: "filter layers", oninput: () => { state.filter = filter.value; draw(); }});
  const tabs = VIEWS.map((view) => el("button", {
    type: "button", "data-view": view, text: VIEW_TITLES[view],
    onclick: () => { state.view = view; stopPlaying(); draw(); },
  }));
  const live = el("span", {className: "live", id: "live"});
  const notices = el("ul", {className: "notices", id: "notices"});
  const findings = el("section", {className: "findings", id: "findings"});
  const main = el("main", {id: "view"});
  const zoomImage = el("img", {alt: ""});
  const zoomCaption = el("figcaption");
  const zoomBox = el("div", {className: "zoom", id: "zoom", onclick: () => { zoomBox.hidden = true; }},
    el("figure", {}, zoomImage, zoomCaption));
  zoomBox.hidden = true;
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") zoomBox.hidden = true; });
  const bar = el("header", {className: "bar"},
    el("label", {}, "Run ", run), el("label", {}, "Probe image ", probe),
    el("label", {}, "Layers ", filter), el("nav", {className: "tabs"}, ...tabs), live);
  const root = el("div", {className: "tbviz"}, bar, notices, findings, main, zoomBox);
  return {root, run, probe, filter, tabs, live, notices, findings, main, zoom: zoomBox, zoomImage, zoomCaption};
}

async function loadAndDraw(run) {
  if (run && !state.data.has(run)) {
    try {
      state.data.set(run, prepare(await getJson("run", {run})));
    } catch (error) {
      state.failed.add(run);
      state.notices = [...state.notices, `${run}: ${error.message}`];
    }
  }
  draw();
}

// What the page says was skipped: the server's notices and those of the runs on screen.
function allNotices() {
  const runs = new Set([state.run, ...(state.view === "compare" ? [state.compare.runA, state.compare.runB] : [])]);
  const fromRuns = [...runs].filter((r) => state.data.has(r)).flatMap((r) => state.data.get(r).notices.map((n) => `${r}: ${n}`));
  return [...state.notices, ...fromRuns];
}

function draw() {
  fillSelect(ui.run, state.runs.map((r) => [r, r]), state.run);
  ui.notices.replaceChildren(...allNotices().map((n) => el("li", {text: n})));
  for (const tab of ui.tabs) tab.classList.toggle("active", tab.dataset.view === state.view);
  const data = currentData();
  ui.findings.replaceChildren(...(data ? drawFindings(data) : []));
  if (!data) {
    ui.main.replaceChildren(el("p", {className: "empty", text: state.runs.length ? "Loading…" : "No tbviz pictures in this log directory yet."}));
    return;
  }
  const samples = Math.max(1, ...data.layers.map((l) => l.samples));
  state.probe = Math.min(state.probe, samples - 1);
  fillSelect(ui.probe, [...Array(samples).keys()].map((i) => [i, `probe ${i}`]), state.probe);
  const views = {grid: drawGrid, slider: drawSlider, compare: drawCompare, change: drawChange};
  ui.main.replaceChildren(...views[state.view](data));
}

// ---------------------------------------------------------------- findings

// The run's findings, warnings first: a click shows the layer at its onset
// (Compare: the logged epoch before it against the onset).
function drawFindings(data) {
  const findings = data.findings ?? [];
  if (!data.judged) return [];
  const warnings = findings.filter((f) => f.severity === "warning").length;
  const title = el("h2", {text: findings.length
    ? `Layer health: ${warnings} warning${warnings === 1 ? "" : "s"}, ${findings.length - warnings} info`
    : "Layer health: no findings"});
  if (!findings.length) return [title];
  const list = el("ul", {id: "findings-list"});
  for (const f of findings) {
    const when = f.ongoing ? `since epoch ${f.since}` : `epochs ${f.since}–${f.until}`;
    const button = el("button", {type: "button", className: `finding ${f.severity}`,
      title: "Compare this layer's epoch before the onset with the onset",
      onclick: () => showOnset(data, f)},
    el("span", {className: "severity", text: f.severity}),
    el("strong", {text: f.layer}), ` ${f.kind} ${when}: ${f.detail}`);
    button.dataset.layer = f.layer;
    button.dataset.kind = f.kind;
    button.dataset.since = String(f.since_step);
    list.append(el("li", {}, button));
  }
  return [title, list];
}

function showOnset(data, finding) {
  const layer = data.layers.find((l) => l.name === finding.layer);
  const steps = layer ? layer.steps : data.steps;
  const at = steps.indexOf(finding.since_step);
  const before = at > 0 ? steps[at - 1] : finding.since_step;
  Object.assign(state.compare, {runA: data.run, stepA: before, runB: data.run, stepB: finding.since_step});
  state.filter = finding.layer;
  ui.filter.value = finding.layer;
  state.view = "compare";
  stopPlaying();
  draw();
}

// Marks a grid cell or heat-map cell with the findings that hold there.
function markHealth(node, layer, step) {
  const held = layer.healthAt?.get(step) ?? [];
  if (!held.length) return;
  node.classList.add(held.some((f) => f.severity === "warning") ? "health-warning" : "health-info");
  node.dataset.findings = held.map((f) => f.kind).join(" ");
  node.title = `${node.title ? node.title + " · " : ""}${held.map((f) => `${f.kind} (${f.severity})`).join(", ")}`;
}

// ---------------------------------------------------------------- grid

function gridSteps(steps) {
  // Automatic stride: as many columns as fit the window (at most MAX_GRID_COLUMNS), the last epoch included.
  const fit = Math.floor((window.innerWidth - 160) / (state.thumb + 8));
  const columns = Math.max(2, Math.min(MAX_GRID_COLUMNS, fit));
  const stride = state.stride || Math.max(1, Math.ceil((steps.length - 1) / (columns - 1)));
  const chosen = steps.filter((_, i) => i % stride === 0);
  if (chosen[chosen.length - 1] !== steps[steps.length - 1]) chosen.push(steps[steps.length - 1]);
  return {chosen, stride};
}

function drawGrid(data) {
  const {chosen, stride} = gridSteps(data.steps);
  const strideInput = el("input", {type: "number", min: 0, max: Math.max(1, data.steps.length), value: state.stride, id: "stride"});
  strideInput.addEventListener("change", () => { state.stride = Math.max(0, Number(strideInput.value) || 0); draw(); });
  const size = el("input", {type: "range", min: 48, max: 320, step: 8, value: state.thumb, id: "thumb"});
  size.addEventListener("change", () => { state.thumb = Number(size.value); draw(); });
  const controls = el("p", {className: "controls"},
    `${data.layers.length} layers × ${data.steps.length} logged epochs; showing ${chosen.length} columns: ${stride === 1 ? "every logged epoch" : `one every ${stride} logged epochs, and the last`}. Stride (0: auto) `,
    strideInput, " Picture size ", size, " Click a picture to enlarge it.");
  const table = el("table", {className: "grid", id: "grid"});
  table.append(el("thead", {}, el("tr", {}, el("th", {text: "layer"}), ...chosen.map((s) => el("th", {text: `epoch ${s}`})))));
  const body = el("tbody");
  for (const layer of visibleLayers(data)) {
    const logged = new Set(layer.steps);
    const row = el("tr", {}, el("th", {className: "layer", text: layer.name, title: layer.description}));
    for (const step of chosen) {
      const caption = `${layer.name} · epoch ${step} · probe ${state.probe}`;
      const cell = el("td", {}, logged.has(step) && state.probe < layer.samples
        ? thumbnail(pictureUrl(data.run, layer.name, step, state.probe), layer, step, caption)
        : el("span", {className: "missing", text: "not logged"}));
      markHealth(cell, layer, step);
      row.append(cell);
    }
    body.append(row);
  }
  table.append(body);
  return [controls, el("div", {className: "scroll"}, table)];
}

// ---------------------------------------------------------------- one slider

function stopPlaying() {
  if (state.playing !== null) clearInterval(state.playing);
  state.playing = null;
}

function drawSlider(data) {
  const resume = state.playing !== null;  // a redraw (new epochs) while playing goes on playing
  stopPlaying();
  const last = data.steps.length - 1;
  const position = state.position < 0 || state.position > last ? last : state.position;
  const slider = el("input", {type: "range", min: 0, max: last, step: 1, value: position, id: "epoch-slider"});
  const label = el("output", {id: "epoch-label"});
  const play = el("button", {type: "button", id: "play", text: "▶ Play"});
  const rows = visibleLayers(data).map((layer) => {
    const image = el("img", {alt: layer.name, width: layer.width, height: layer.height});
    image.dataset.layer = layer.name;
    image.addEventListener("click", () => zoom(image.src, `${layer.name} · ${label.textContent}`));
    const note = el("span", {className: "missing"});
    return {layer, image, note, logged: new Set(layer.steps)};
  });
  const show = (index) => {
    const step = data.steps[index];
    state.position = index === last ? -1 : index;
    slider.value = String(index);
    label.textContent = `epoch ${step} (${index + 1} of ${data.steps.length} logged)`;
    for (const {layer, image, note, logged} of rows) {
      const ok = logged.has(step) && state.probe < layer.samples;
      image.hidden = !ok;
      note.textContent = ok ? "" : `not logged at epoch ${step}`;
      if (ok) {
        image.src = pictureUrl(data.run, layer.name, step, state.probe);
        image.dataset.step = String(step);
      }
    }
  };
  slider.addEventListener("input", () => { stopPlaying(); play.textContent = "▶ Play"; show(Number(slider.value)); });
  const start = () => {
    play.textContent = "❚❚ Pause";
    state.playing = setInterval(() => {
      const next = Number(slider.value) + 1;
      if (next > last) {
        stopPlaying();
        play.textContent = "▶ Play";
      } else {
        show(next);
      }
    }, PLAY_MS);
  };
  play.addEventListener("click", () => {
    if (state.playing !== null) {
      stopPlaying();
      play.textContent = "▶ Play";
      return;
    }
    if (Number(slider.value) >= last) show(0);
    start();
  });
  show(position);
  if (resume) start();
  const list = el("div", {className: "slider-list", id: "slider-list"},
    ...rows.map(({layer, image, note}) => el("figure", {}, el("figcaption", {text: layer.name, title: layer.description}), image, note)));
  return [el("p", {className: "controls"}, play, " ", slider, " ", label), list];
}

// ---------------------------------------------------------------- compare

function drawCompare(data) {
  const c = state.compare;
  if (!state.runs.includes(c.runA) || state.failed.has(c.runA)) c.runA = data.run;
  if (!state.runs.includes(c.runB) || state.failed.has(c.runB)) c.runB = data.run;
  const dataA = state.data.get(c.runA);
  const dataB = state.data.get(c.runB);
  if (!dataA || !dataB) {
    loadAndDraw(dataA ? c.runB : c.runA);
    return [el("p", {className: "empty", text: "Loading…"})];
  }
  if (!dataA.steps.includes(c.stepA)) c.stepA = dataA.steps[0];
  if (!dataB.steps.includes(c.stepB)) c.stepB = dataB.steps[dataB.steps.length - 1];
  const side = (key, runKey, stepKey, sideData) => {
    const runSelect = el("select", {id: `run-${key}`});
    fillSelect(runSelect, state.runs.map((r) => [r, r]), c[runKey]);
    runSelect.addEventListener("change", () => { c[runKey] = runSelect.value; loadAndDraw(runSelect.value); });
    const stepSelect = el("select", {id: `step-${key}`});
    fillSelect(stepSelect, sideData.steps.map((s) => [s, `epoch ${s}`]), c[stepKey]);
    stepSelect.addEventListener("change", () => { c[stepKey] = Number(stepSelect.value); draw(); });
    return el("span", {className: "side"}, `${key.toUpperCase()}: `, runSelect, " ", stepSelect);
  };
  const byName = new Map(dataB.layers.map((l) => [l.name, l]));
  const layers = visibleLayers(dataA).filter((l) => byName.has(l.name));
  const fixed = layers.length > 0 && layers.every((l) => l.normalize === "fixed" && byName.get(l.name).normalize === "fixed");
  const explanation = el("p", {className: "explain", id: "compare-explanation", text:
    "Difference = B − A of the normalised pictures (each pixel's value in [0, 1], as coloured): red where B is higher, blue where it is lower, white where equal. " +
    (fixed
      ? "These layers were logged with normalize=\"fixed\" (one scale for every epoch), so the difference shows where the pattern changed and also how much the activations grew or shrank."
      : "Pictures logged with normalize=\"map\" or \"layer\" each have their own scale, so the difference shows where the pattern changed, not how much the activations changed in size (log with normalize=\"fixed\" for that; the Change view measures it).")});
  const rows = layers.map((layer) => {
    const other = byName.get(layer.name);
    const okA = layer.steps.includes(c.stepA) && state.probe < layer.samples;
    const okB = other.steps.includes(c.stepB) && state.probe < other.samples;
    const cell = (ok, url, who, className) => {
      if (!ok) return el("span", {className: "missing", text: "not logged"});
      const image = thumbnail(url, layer, who, `${layer.name} · ${className}`);
      image.className = className;
      return image;
    };
    return el("tr", {},
      el("th", {className: "layer", text: layer.name, title: layer.description}),
      el("td", {}, cell(okA, pictureUrl(c.runA, layer.name, c.stepA, state.probe), c.stepA, "a")),
      el("td", {}, cell(okB, pictureUrl(c.runB, layer.name, c.stepB, state.probe), c.stepB, "b")),
      el("td", {}, cell(okA && okB && sameSize(layer, other), differenceUrl(c.runA, c.stepA, c.runB, c.stepB, layer.name, state.probe), c.stepB, "difference")));
  });
  const missing = visibleLayers(dataA).length - layers.length;
  const table = el("table", {className: "grid compare", id: "compare"},
    el("thead", {}, el("tr", {}, el("th", {text: "layer"}), el("th", {text: `A: ${c.runA}, epoch ${c.stepA}`}),
      el("th", {text: `B: ${c.runB}, epoch ${c.stepB}`}), el("th", {text: "B − A"}))),
    el("tbody", {}, ...rows));
  const out = [el("p", {className: "controls"}, side("a", "runA", "stepA", dataA), side("b", "runB", "stepB", dataB)), explanation];
  if (missing > 0) out.push(el("p", {className: "explain", text: `${missing} layer(s) of A are not in B's run and are left out.`}));
  out.push(el("div", {className: "scroll"}, table));
  return out;
}

function sameSize(a, b) {
  return a.width === b.width && a.height === b.height;
}

// ---------------------------------------------------------------- change heat map

function drawChange(data) {
  const layers = visibleLayers(data);
  const scale = data.change_scale;
  const note = el("p", {className: "explain", id: "change-explanation", text:
    "Change of each layer's activations on the probe batch since the previous logged epoch: the relative L2 change ||a − b|| / ||b|| " +
    `of the layer's maps (each shrunk to at most ${data.coarse_size} × ${data.coarse_size}, raw values), the change/<layer> scalar. ` +
    "Bright: still changing; dark: settled. Log colour scale. The first logged epoch has nothing to compare with. " +
    "Click a cell to compare the two epochs."});
  if (scale.low === null) {
    return [note, el("p", {className: "empty", text: "No change/<layer> values in this run yet (they start at the second logged epoch; logs of tbviz before this dashboard have none)."})];
  }
  const heat = el("div", {className: "heat", id: "heatmap"});
  heat.style.gridTemplateColumns = `minmax(8em, max-content) repeat(${data.steps.length}, minmax(10px, 1fr))`;
  heat.append(el("span", {className: "corner", text: "layer \\ epoch"}));
  const labelEvery = Math.max(1, Math.ceil(data.steps.length / 20));
  data.steps.forEach((s, i) => heat.append(el("span", {className: "step", text: i % labelEvery === 0 ? String(s) : ""})));
  for (const layer of layers) {
    heat.append(el("span", {className: "layer", text: layer.name, title: layer.name}));
    data.steps.forEach((step) => {
      const value = layer.changeAt.get(step);
      const cell = el("span", {className: "heat-cell"});
      cell.dataset.layer = layer.name;
      cell.dataset.step = String(step);
      if (value === undefined || value === null) {
        cell.classList.add("none");
        cell.title = `${layer.name} · epoch ${step}: no change value (first logged epoch, or not logged)`;
      } else {
        cell.style.background = layer.colourAt.get(step);
        const previous = layer.steps[layer.steps.indexOf(step) - 1] ?? step;
        cell.title = `${layer.name} · epoch ${step}: change ${value.toPrecision(3)} since epoch ${previous}`;
        markHealth(cell, layer, step);
        cell.addEventListener("click", () => {
          Object.assign(state.compare, {runA: data.run, stepA: previous, runB: data.run, stepB: step});
          state.filter = layer.name;
          ui.filter.value = layer.name;
          state.view = "compare";
          draw();
        });
      }
      heat.append(cell);
    });
  }
  const legend = el("p", {className: "legend"}, `${scale.low.toPrecision(2)} `,
    el("span", {className: "ramp"}), ` ${scale.high.toPrecision(2)}`);
  legend.querySelector(".ramp").style.background = `linear-gradient(to right, ${scale.ramp.join(", ")})`;
  return [note, legend, el("div", {className: "scroll"}, heat)];
}
