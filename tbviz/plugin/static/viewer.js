// tbviz's viewer: feature-map pictures, layers x epochs. One page code for three places:
//
//   - TensorBoard's ACTIVATIONS tab: index.js mounts it with serverSource(), the
//     plugin's routes (tbviz/plugin/server.py: /runs, /run, /numbers, /picture);
//   - a notebook output (tbviz.show, ActivationLogger(notebook=True)) and a report
//     file (tbviz export --html): tbviz/plugin/html.py inlines this file and
//     style.css and mounts it with embeddedSource(), the same answers and the
//     logged PNGs embedded as JSON. No server, no network, no kernel.
//
// Plain JavaScript, no build step, no third-party code. It runs both as an ES
// module (index.js imports pictures.js, then it) and as a classic inline script
// (a file:// page or a notebook output cannot import modules: html.py inlines
// pictures.js, then it): each file one function, no import or export, adding to
// globalThis.tbvizViewer. Each mount is a viewer of its own (a notebook may hold
// several). Layer and run names are data, shown with textContent only.
//
// Views: "Layers × epochs" (one row per layer, one column per logged epoch, for
// one probe image), "One slider" (one epoch slider and play for every layer),
// "Compare" (two epochs of one run, or of two runs, with the difference B − A
// on its own range) and "Change" (the change/<layer> heat map). Above them,
// the run's layer-health findings, each one click away from its layer at its
// onset. A click on a picture enlarges it; there ←/→ step through the epochs
// and ↑/↓ through the layers, with the layer's numbers at that epoch.
(() => {
  "use strict";

  const POLL_MS = 5000;
  const PLAY_MS = 700;
  const MAX_GRID_COLUMNS = 12;
  const MIN_AUTO_SIZE = 224;   // px: the automatic picture size never goes below...
  const MAX_AUTO_SIZE = 480;   // ...nor above these
  const LABEL_WIDTH = 232;     // px: the layer column (style.css: .layer-label)
  const CELL_PAD = 10;         // px: around a picture in a grid cell
  const LEVELS = 254;          // palette indices below this are values (tbviz.io.tags)
  const {displaySize, difference} = globalThis.tbvizViewer;  // pictures.js, loaded first
  const VIEWS = ["grid", "slider", "compare", "change"];
  const VIEW_TITLES = {grid: "Layers × epochs", slider: "One slider", compare: "Compare", change: "Change heat map"};
  const NUMBER_TITLES = {
    mean: "mean", std: "standard deviation", zero_fraction: "share of zeros", rms: "root mean square",
    dead_channels: "dead channels (share)", saturation: "saturated (share)", nonfinite: "NaN/Inf values",
    change: "change since the previous logged epoch",
  };
  const NORMALIZE = {
    map: "each map scaled to its own range",
    layer: "one range for the layer's maps and probes, per epoch",
    fixed: "one range for every epoch (brightness comparable along epochs)",
  };

  // The epoch as Keras prints it ("Epoch 1/20") for TensorBoard's step (Keras' 0-based
  // epoch index): the one convention of every tbviz reader (tbviz.io.tags.epoch_number).
  function epochNumber(step) {
    return step + 1;
  }

  // ---------------------------------------------------------------- data sources

  // The tab: the plugin's routes, relative to the page (TensorBoard's iframe).
  function serverSource() {
    const tokens = new Map();
    const get = async (route, params) => {
      const response = await fetch(route + (params ? "?" + new URLSearchParams(params) : ""));
      const text = await response.text();
      if (!response.ok) throw new Error(text || `${route}: HTTP ${response.status}`);
      return JSON.parse(text);
    };
    return {
      live: true,
      runs: () => get("runs"),
      run: async (run) => {
        const data = await get("run", {run});
        tokens.set(run, data.token);
        return data;
      },
      numbers: (run, layer) => get("numbers", {run, layer}),
      pictureUrl: (run, layer, step, sample) =>
        "picture?" + new URLSearchParams({run, layer, step, sample, v: tokens.get(run) ?? ""}),
      // Why a picture did not load: the server's message (null: it loads).
      explain: async (url) => {
        try {
          const response = await fetch(url);
          return response.ok ? null : (await response.text()) || `HTTP ${response.status}`;
        } catch (error) {
          return `could not reach the server: ${error.message}`;
        }
      },
    };
  }

  // A notebook output or a report file: everything embedded (tbviz/plugin/html.py).
  function embeddedSource(doc) {
    return {
      live: false,
      title: doc.title,
      runs: async () => ({runs: doc.runs, versions: Object.fromEntries(doc.runs.map((r) => [r, "embedded"])), notices: doc.notices}),
      run: async (run) => {
        if (!doc.answers[run]) throw new Error(`no run ${run} in this viewer`);
        return doc.answers[run];
      },
      numbers: async (run, layer) => doc.numbers[run]?.[layer] ?? {steps: [], numbers: {}},
      pictureUrl: (run, layer, step, sample) => {
        const png = doc.pictures[run]?.[layer]?.[String(step)]?.[sample];
        return png ? "data:image/png;base64," + png : null;
      },
      explain: async (url) => (url ? null : "the picture is not in this viewer"),
    };
  }

  // ---------------------------------------------------------------- small helpers

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes)) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function fillSelect(select, options, selected) {
    const same = select.options.length === options.length
      && options.every(([value, label], i) => select.options[i].value === String(value) && select.options[i].text === label);
    if (!same) select.replaceChildren(...options.map(([value, label]) => el("option", {value, text: label})));
    if (selected !== undefined && selected !== null) select.value = String(selected);
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  function formatNumber(value) {
    if (value === null || value === undefined) return "—";
    if (value === 0) return "0";
    const magnitude = Math.abs(value);
    return magnitude >= 1e4 || magnitude < 1e-3 ? value.toExponential(2) : String(Number(value.toPrecision(3)));
  }

  function shapeText(shape) {
    return "(" + shape.map((s) => (s === null ? "?" : String(s))).join(", ") + ")";
  }

  function gradient(colours, stops = 17) {
    if (!colours || !colours.length) return "";
    const picked = [...Array(stops).keys()].map((i) => colours[Math.round((i * (colours.length - 1)) / (stops - 1))]);
    return `linear-gradient(to right, ${picked.join(", ")})`;
  }

  // What a layer's picture shows, in words, from its LayerInfo (tbviz.io.tags): the row label.
  function describe(layer) {
    const info = layer.info;
    if (!info) return {what: [`${layer.width} × ${layer.height} px`], cmap: null, normalize: layer.normalize};
    const shown = info.channels_shown < info.channels ? `first ${info.channels_shown} of ${info.channels}` : `${info.channels}`;
    const [rows, cols] = info.grid;
    const [h, w] = info.cell;
    const layout = {
      maps: `${shown} maps of ${h}×${w}, tiled ${rows} × ${cols}`,
      tokens: `${shown} channels over a ${h}×${w} token grid, tiled ${rows} × ${cols}`,
      volume: `${shown} channels, rows of ${cols} depth slices`,
      strip: `${shown} channels down, time across`,
      block: `${info.channels} units as one ${h}×${w} block`,
      image: info.channels === 3 ? "the image, in colour" : "the image, grey",
    }[info.layout] ?? info.layout;
    const lines = [`${info.layer_class} · ${shapeText(info.output_shape)}`, layout];
    if (info.layout !== "image") {
      const clip = info.clip_percentile ? `, ${info.clip_percentile}% clipped at each end` : "";
      lines.push(`normalize="${info.normalize}"${clip}`);
    }
    if (info.shrunk) lines.push(info.shrunk);
    return {what: lines, cmap: info.layout === "image" ? null : info.cmap, normalize: info.normalize};
  }

  function isProbeRow(layer) {
    return layer.info?.layout === "image" && layer.info?.layer_class === "InputLayer";
  }

  // ---------------------------------------------------------------- one viewer

  function mount(host, source, options = {}) {
    const states = (globalThis.__tbvizStates ??= {});
    const saved = options.key ? states[options.key] : null;
    const state = {
      runs: [],
      run: null,          // the run shown (A in Compare)
      data: new Map(),    // run name -> its answer (viewdata.run_answer)
      numbers: new Map(), // "run\nlayer\nversion" -> the layer's numbers
      probe: 0,
      filter: "",
      view: "grid",
      stride: 0,          // grid: 0 = automatic
      size: null,         // picture size, px; null = automatic (fill the width)
      position: -1,       // slider: index into the run's steps; -1 = the last one
      playing: null,      // slider: interval id while playing
      compare: {stepA: null, runB: null, stepB: null},
      zoom: null,         // {layer, step} of the enlarged picture, or {url, caption}
      notices: [],        // from the source, and failures to reach it
      failed: new Set(),  // runs whose answer failed: not asked again until listed anew
      ...(saved ? structuredClone(saved) : {}),
    };
    state.data = new Map();
    state.numbers = new Map();
    state.failed = new Set();
    state.playing = null;
    const remember = () => {
      if (!options.key) return;
      const {probe, filter, view, stride, size, position, compare, run} = state;
      states[options.key] = {probe, filter, view, stride, size, position, compare: {...compare}, run,
        zoom: state.zoom && state.zoom.layer ? {...state.zoom} : null};
    };

    const ui = buildShell();
    host.replaceChildren(ui.root);
    const views = {grid: gridView(), slider: sliderView(), compare: compareView(), change: changeView()};
    let shownView = null;

    new ResizeObserver(() => {
      ui.root.style.setProperty("--sticky-top", `${ui.controls.offsetHeight}px`);
    }).observe(ui.controls);
    let resizeTimer = null;
    const onResize = () => {
      if (!ui.root.isConnected) {  // replaced (a notebook's live view, at its next epoch)
        window.removeEventListener("resize", onResize);
        return;
      }
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state.size === null || state.stride === 0) drawBody(); }, 150);
    };
    window.addEventListener("resize", onResize);

    refresh().then(() => { if (source.live) schedulePoll(); });
    return {root: ui.root};

    // ------------------------------------------------------------ data

    async function refresh() {
      const notices = [];
      let changed = false;
      const versions = [...state.data.values()].map((d) => d.version).join();
      try {
        const listing = await source.runs();
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
        // Only the runs on screen, and only when something new was read in them.
        const wanted = new Set([state.run, state.view === "compare" ? state.compare.runB : null].filter((r) => state.runs.includes(r)));
        for (const run of wanted) {
          if (state.data.get(run)?.version !== listing.versions[run] || !state.data.has(run)) {
            try {
              state.data.set(run, prepare(await source.run(run)));
            } catch (error) {
              state.failed.add(run);
              notices.push(`${run}: ${error.message}`);
            }
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
      ui.live.textContent = source.live ? `live · checked ${new Date().toLocaleTimeString()}` : (source.title ?? "");
      if (changed) draw();
    }

    function schedulePoll() {
      setTimeout(async () => {
        if (!document.hidden) await refresh();
        schedulePoll();
      }, POLL_MS);
    }

    // Adds to a run's answer its layers' values by step.
    function prepare(data) {
      for (const layer of data.layers) {
        layer.changeAt = new Map(layer.steps.map((step, i) => [step, layer.change[i]]));
        layer.colourAt = new Map(layer.steps.map((step, i) => [step, layer.change_colour[i]]));
        layer.healthAt = new Map(layer.steps.map((step, i) => [step, (layer.health ?? [])[i] ?? []]));
        layer.infoAt = new Map(layer.steps.map((step, i) => [step, (layer.infos ?? [])[(layer.info_at ?? [])[i]] ?? layer.info]));
        layer.logged = new Set(layer.steps);
      }
      data.byName = new Map(data.layers.map((layer) => [layer.name, layer]));
      data.probeLayer = data.layers.find(isProbeRow) ?? null;
      return data;
    }

    async function loadRun(run) {
      if (run && !state.data.has(run) && !state.failed.has(run)) {
        try {
          state.data.set(run, prepare(await source.run(run)));
        } catch (error) {
          state.failed.add(run);
          state.notices = [...state.notices, `${run}: ${error.message}`];
        }
      }
    }

    async function numbersOf(run, layer) {
      const key = `${run}\n${layer}\n${state.data.get(run)?.version}`;
      if (!state.numbers.has(key)) state.numbers.set(key, source.numbers(run, layer).catch(() => null));
      return state.numbers.get(key);
    }

    function current() {
      return state.run ? state.data.get(state.run) : null;
    }

    function visibleLayers(data) {
      const needle = state.filter.trim().toLowerCase();
      return data.layers.filter((layer) => !needle || layer.name.toLowerCase().includes(needle));
    }

    function hasPicture(layer, step) {
      return layer.logged.has(step) && state.probe < layer.samples;
    }

    // ------------------------------------------------------------ the shell

    function buildShell() {
      const run = el("select", {id: "run", "aria-label": "run", onchange: () => { selectRun(run.value); }});
      const runText = el("span", {className: "run-name"});
      const probe = el("span", {className: "probes", id: "probe", role: "group", "aria-label": "probe image"});
      const filter = el("input", {id: "filter", type: "search", placeholder: "filter layers", "aria-label": "filter layers",
        oninput: () => { state.filter = filter.value; remember(); drawBody(); }});
      const clear = el("button", {type: "button", className: "clear", id: "filter-clear", title: "Show every layer", text: "✕",
        onclick: () => { setFilter(""); }});
      const tabs = VIEWS.map((view) => el("button", {
        type: "button", "data-view": view, text: VIEW_TITLES[view],
        onclick: () => { state.view = view; stopPlaying(); remember(); draw(); },
      }));
      const live = el("span", {className: "live", id: "live"});
      const bar = el("header", {className: "bar"},
        el("label", {className: "run-choice"}, "Run ", run, runText),
        el("span", {className: "probe-choice"}, "Probe image ", probe),
        el("span", {className: "filter"}, el("label", {}, "Layers ", filter), clear),
        el("nav", {className: "tabs"}, ...tabs), live);
      const notices = el("ul", {className: "notices pinned", id: "notices"});
      const findings = el("section", {className: "findings pinned", id: "findings"});
      const controls = el("div", {className: "controls-bar"});
      const body = el("div", {className: "view-body", id: "view"});
      const scroll = el("div", {className: "scroll"}, notices, findings, controls, body);
      const zoom = el("div", {className: "zoom", id: "zoom", tabindex: "-1", role: "dialog", "aria-label": "enlarged picture"});
      zoom.hidden = true;
      zoom.addEventListener("click", (event) => { if (event.target === zoom) closeZoom(); });
      zoom.addEventListener("keydown", zoomKeys);
      const mode = options.mode ?? "page";
      const root = el("div", {className: `tbviz ${mode}`}, bar, scroll, zoom);
      return {root, run, runText, probe, filter, clear, tabs, live, notices, findings, controls, body, scroll, zoom};
    }

    function selectRun(run) {
      state.run = run;
      stopPlaying();
      state.position = -1;
      remember();
      loadRun(run).then(draw);
    }

    function setFilter(text) {
      state.filter = text;
      ui.filter.value = text;
      remember();
      drawBody();
    }

    // What was skipped: the source's notices and those of the runs on screen.
    function allNotices() {
      const runs = new Set([state.run, ...(state.view === "compare" ? [state.compare.runB] : [])]);
      const fromRuns = [...runs].filter((r) => state.data.has(r)).flatMap((r) => state.data.get(r).notices.map((n) => `${r}: ${n}`));
      return [...state.notices, ...fromRuns];
    }

    function draw() {
      const several = state.runs.length > 1;
      fillSelect(ui.run, state.runs.map((r) => [r, r]), state.run);
      ui.run.hidden = !several;
      ui.runText.hidden = several;
      ui.runText.textContent = state.run ?? "";
      ui.notices.replaceChildren(...allNotices().map((n) => el("li", {text: n})));
      for (const tab of ui.tabs) tab.classList.toggle("active", tab.dataset.view === state.view);
      ui.filter.value = state.filter;
      const data = current();
      ui.findings.replaceChildren(...(data ? drawFindings(data) : []));
      drawProbes(data);
      if (shownView !== state.view) {
        ui.controls.replaceChildren(views[state.view].controls);
        shownView = state.view;
      }
      drawBody();
      if (state.zoom && data) showZoom();
    }

    // The view's body only: its controls stay (and keep the keyboard focus).
    function drawBody() {
      ui.clear.hidden = !state.filter;
      const data = current();
      if (!data) {
        ui.body.replaceChildren(el("p", {className: "empty", text: state.runs.length ? "Loading…" : "No tbviz pictures in this log directory yet."}));
        return;
      }
      ui.body.replaceChildren(...views[state.view].draw(data));
    }

    // The probe images: the model's input as the model sees it, when it is logged
    // (layers="all", or its name), else their numbers.
    function drawProbes(data) {
      if (!data) return;
      const probes = data.probes ?? [...Array(Math.max(1, ...data.layers.map((l) => l.samples))).keys()];
      if (!probes.includes(state.probe)) state.probe = probes[0] ?? 0;
      const input = data.probeLayer;
      const last = input ? input.steps[input.steps.length - 1] : null;
      const key = JSON.stringify([data.run, data.token ?? "", probes, last]);
      if (ui.probe.dataset.key === key) {  // the same buttons (one may have the focus): mark the chosen one
        for (const button of ui.probe.children) button.setAttribute("aria-pressed", String(button.dataset.probe === String(state.probe)));
        return;
      }
      ui.probe.dataset.key = key;
      ui.probe.replaceChildren(...probes.map((p) => {
        const button = el("button", {type: "button", className: "probe", "data-probe": p, "aria-pressed": String(p === state.probe),
          title: input ? `probe image ${p}, as the model sees it` : `probe image ${p} (log the model's input, layers="all" or its name, to see it here)`,
          onclick: () => { state.probe = p; remember(); draw(); }});
        const url = input ? source.pictureUrl(data.run, input.name, last, p) : null;
        if (url) {
          const size = displaySize(input.width, input.height, 36);
          button.append(el("img", {src: url, alt: `probe ${p}`, width: Math.min(size.width, 48), height: Math.round(Math.min(size.width, 48) * input.height / input.width)}));
        }
        button.append(el("span", {text: String(p)}));
        return button;
      }));
    }

    // ------------------------------------------------------------ pictures

    // The probe row is the reference, not the subject: half the column.
    function pictureSize(layer, size) {
      return displaySize(layer.width, layer.height, isProbeRow(layer) ? size / 2 : size);
    }

    // An <img> of one logged picture, enlarged to `size`; a click enlarges it further.
    function picture(run, layer, step, size, extra = {}) {
      const url = source.pictureUrl(run, layer.name, step, state.probe);
      const shown = pictureSize(layer, size);
      const caption = `${layer.name} · epoch ${epochNumber(step)} · probe ${state.probe}`;
      if (!url) return el("span", {className: "missing", text: "not in this viewer"});
      const image = el("img", {
        loading: "lazy", decoding: "async", alt: caption, title: caption,
        width: shown.width, height: shown.height, "data-render": shown.factor >= 1 ? "pixelated" : "smooth", ...extra,
      });
      image.dataset.layer = layer.name;
      image.dataset.step = String(step);
      image.dataset.factor = String(shown.factor);
      image.addEventListener("error", () => explainFailure(image, url));
      image.addEventListener("click", () => openZoom({run, layer: layer.name, step}));
      image.src = url;
      return image;
    }

    // A picture that did not load shows why: the server's message, not a broken image.
    async function explainFailure(image, url) {
      const reason = (await source.explain(url)) ?? "the picture could not be decoded";
      if (!image.isConnected) return;
      image.replaceWith(el("span", {className: "failed", text: `picture not shown: ${reason}`}));
    }

    function colourBar(cmap, palette, note) {
      if (!cmap || !palette) return null;
      const ramp = el("span", {className: "colour-bar", title: `${cmap}: ${note}`});
      ramp.style.background = gradient(palette.slice(0, LEVELS));
      return el("span", {className: "colour-legend"}, el("span", {text: "low"}), ramp, el("span", {text: "high"}));
    }

    // The row label of a layer: name, class, shape, what the picture shows, normalisation, colour bar.
    function layerLabel(data, layer, {compact = false} = {}) {
      const {what, cmap, normalize} = describe(layer);
      const probeRow = isProbeRow(layer);
      const lines = compact ? what.slice(0, 1) : what;
      const label = el("div", {className: "layer-label" + (probeRow ? " probe-label" : "")},
        el("div", {className: "name", text: layer.name, title: layer.name}),
        ...(probeRow ? [el("div", {className: "what", text: "the probe, as the model sees it"})] : []),
        ...lines.map((line) => el("div", {className: "what", text: line})),
        colourBar(cmap, data.palettes?.[cmap], NORMALIZE[normalize] ?? ""));
      label.title = layer.description || layer.name;
      return label;
    }

    // ------------------------------------------------------------ findings

    // The run's findings, warnings first: a click shows the layer at its onset
    // (Compare: the logged epoch before it against the onset).
    function drawFindings(data) {
      const findings = data.findings ?? [];
      if (!data.judged) return [];
      const warnings = findings.filter((f) => f.severity === "warning").length;
      const title = el("h2", {text: findings.length
        ? `Layer health: ${plural(warnings, "warning")}, ${findings.length - warnings} info`
        : "Layer health: no findings"});
      if (!findings.length) return [title];
      const list = el("ul", {id: "findings-list"});
      // Each finding as tbviz report prints it (tbviz.io.reader.Judged): `since` and `until` are
      // epochs as Keras prints them, `since_step` and `until_step` TensorBoard's steps.
      for (const f of findings) {
        const when = f.ongoing ? `since epoch ${f.since}` : `epochs ${f.since}–${f.until}`;
        const detail = f.message ? f.message.slice(f.message.indexOf(": ") + 2) : f.detail;
        const button = el("button", {type: "button", className: `finding ${f.severity}`,
          title: "Compare this layer's epoch before the onset with the onset",
          onclick: () => showOnset(data, f)},
        el("span", {className: "severity", text: f.severity}),
        el("strong", {text: f.layer}), ` ${f.kind} ${when}: ${detail}`);
        button.dataset.layer = f.layer;
        button.dataset.kind = f.kind;
        button.dataset.since = String(f.since_step);
        list.append(el("li", {}, button));
      }
      return [title, list];
    }

    function showOnset(data, finding) {
      const layer = data.byName.get(finding.layer);
      const steps = layer ? layer.steps : data.steps;
      const at = steps.indexOf(finding.since_step);
      const before = at > 0 ? steps[at - 1] : finding.since_step;
      compareLayer(data, finding.layer, before, finding.since_step);
    }

    // Compare: one layer, two epochs of the run. The filter it sets is shown (and cleared) in the bar.
    function compareLayer(data, layer, stepA, stepB) {
      Object.assign(state.compare, {stepA, runB: data.run, stepB});
      state.filter = layer;
      state.view = "compare";
      stopPlaying();
      remember();
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

    function layerCount(data, shown) {
      const filtered = state.filter ? ` matching “${state.filter}”` : "";
      return shown.length === data.layers.length ? plural(data.layers.length, "layer") : `${shown.length} of ${data.layers.length} layers${filtered}`;
    }

    // ------------------------------------------------------------ sizes

    function availableWidth() {
      return Math.max(320, ui.scroll.clientWidth - LABEL_WIDTH - 32);
    }

    function sizeControl(onchange) {
      const input = el("input", {type: "range", min: 48, max: 960, step: 16, className: "size", "aria-label": "picture size"});
      const auto = el("button", {type: "button", className: "auto", text: "fit", title: "Fit the pictures to the window"});
      input.addEventListener("input", () => { state.size = Number(input.value); remember(); onchange(); });
      auto.addEventListener("click", () => { state.size = null; remember(); onchange(); });
      const label = el("label", {className: "size-control"}, "Picture size ", input, auto);
      return {label, input, auto, show: (size) => { input.value = String(size); auto.disabled = state.size === null; }};
    }

    // ------------------------------------------------------------ grid

    function gridView() {
      const summary = el("span", {className: "summary"});
      const stride = el("input", {type: "number", min: 0, value: 0, id: "stride", "aria-label": "stride"});
      stride.addEventListener("change", () => { state.stride = Math.max(0, Number(stride.value) || 0); remember(); drawBody(); });
      const size = sizeControl(() => drawBody());
      size.input.id = "thumb";
      const controls = el("div", {className: "controls"}, summary, el("label", {}, " Every ", stride, " logged epochs (0: fit the window) "),
        size.label, el("span", {className: "hint", text: "Click a picture to enlarge it; there ←/→ step through the epochs."}));

      function layout(data) {
        const steps = data.steps;
        const avail = availableWidth();
        const target = state.size ?? Math.max(MIN_AUTO_SIZE, Math.min(MAX_AUTO_SIZE, Math.floor(avail / Math.max(1, steps.length)) - CELL_PAD));
        const fit = Math.max(2, Math.min(MAX_GRID_COLUMNS, Math.floor(avail / (target + CELL_PAD))));
        const every = state.stride || Math.max(1, Math.ceil((steps.length - 1) / (fit - 1)));
        const chosen = steps.filter((_, i) => i % every === 0);
        if (chosen[chosen.length - 1] !== steps[steps.length - 1]) chosen.push(steps[steps.length - 1]);
        const size = state.size ?? Math.max(MIN_AUTO_SIZE, Math.min(MAX_AUTO_SIZE, Math.floor(avail / chosen.length) - CELL_PAD));
        return {chosen, every, size};
      }

      function draw(data) {
        const layers = visibleLayers(data);
        const {chosen, every, size: planned} = layout(data);
        // The column is as wide as its widest picture: the others are enlarged to fill it too.
        const target = Math.max(planned, ...layers.map((l) => {
          const shown = pictureSize(l, planned);
          return Math.max(shown.width, shown.height);
        }));
        summary.textContent = `${layerCount(data, layers)} × ${plural(data.steps.length, "logged epoch")}; ${chosen.length} columns: ` +
          `${every === 1 ? "every logged epoch" : `one every ${every} logged epochs, and the last`}.`;
        stride.max = String(Math.max(1, data.steps.length));
        if (document.activeElement !== stride) stride.value = String(state.stride);
        size.show(planned);
        const table = el("table", {className: "grid", id: "grid"});
        table.append(el("thead", {}, el("tr", {}, el("th", {className: "corner", text: "layer"}),
          ...chosen.map((s) => el("th", {text: `epoch ${epochNumber(s)}`, "data-step": s})))));
        const body = el("tbody");
        for (const layer of layers) {
          const row = el("tr", {className: isProbeRow(layer) ? "probe-row" : null}, el("th", {className: "layer", scope: "row"}, layerLabel(data, layer)));
          for (const step of chosen) {
            const cell = el("td", {}, hasPicture(layer, step)
              ? picture(data.run, layer, step, target)
              : el("span", {className: "missing", text: "not logged"}));
            markHealth(cell, layer, step);
            row.append(cell);
          }
          body.append(row);
        }
        table.append(body);
        return [table];
      }
      return {controls, draw};
    }

    // ------------------------------------------------------------ one slider

    function stopPlaying() {
      if (state.playing !== null) clearInterval(state.playing);
      state.playing = null;
      for (const button of ui.root.querySelectorAll(".play")) button.textContent = "▶ Play";
    }

    function sliderView() {
      const play = el("button", {type: "button", id: "play", className: "play", text: "▶ Play"});
      const slider = el("input", {type: "range", min: 0, max: 0, step: 1, value: 0, id: "epoch-slider", "aria-label": "epoch"});
      const label = el("output", {id: "epoch-label"});
      const size = sizeControl(() => drawBody());
      const controls = el("div", {className: "controls"}, play, " ", slider, " ", label, " ", size.label);
      let rows = [];
      let steps = [];

      const show = (index) => {
        const step = steps[index];
        state.position = index === steps.length - 1 ? -1 : index;
        slider.value = String(index);
        label.textContent = `epoch ${epochNumber(step)} · ${index + 1} of ${plural(steps.length, "logged epoch")}`;
        for (const row of rows) row.show(step);
        if (state.zoom && state.zoom.layer) { state.zoom.step = step; showZoom(); }
        remember();
      };
      const start = () => {
        play.textContent = "❚❚ Pause";
        state.playing = setInterval(() => {
          const next = Number(slider.value) + 1;
          if (next > steps.length - 1) stopPlaying();
          else show(next);
        }, PLAY_MS);
      };
      slider.addEventListener("input", () => { stopPlaying(); show(Number(slider.value)); });
      play.addEventListener("click", () => {
        if (state.playing !== null) { stopPlaying(); return; }
        if (Number(slider.value) >= steps.length - 1) show(0);
        start();
      });

      function draw(data) {
        const resume = state.playing !== null;  // new epochs while playing: play on
        if (resume) clearInterval(state.playing);
        state.playing = null;
        steps = data.steps;
        const last = steps.length - 1;
        slider.max = String(last);
        const position = state.position < 0 || state.position > last ? last : state.position;
        const avail = availableWidth() + LABEL_WIDTH;
        const target = state.size ?? Math.max(MIN_AUTO_SIZE, Math.min(MAX_AUTO_SIZE, Math.floor(avail / 3) - 32));
        size.show(target);
        rows = visibleLayers(data).map((layer) => {
          const shown = pictureSize(layer, target);
          const image = el("img", {alt: layer.name, width: shown.width, height: shown.height, "data-render": shown.factor >= 1 ? "pixelated" : "smooth"});
          image.dataset.layer = layer.name;
          image.dataset.factor = String(shown.factor);
          image.addEventListener("click", () => openZoom({run: data.run, layer: layer.name, step: Number(image.dataset.step)}));
          image.addEventListener("error", async () => {
            // This picture stays (the slider moves on to others): hidden, with the reason beside it.
            const url = image.getAttribute("src");
            const reason = (await source.explain(url)) ?? "the picture could not be decoded";
            if (image.getAttribute("src") !== url) return;
            image.hidden = true;
            note.textContent = `picture not shown: ${reason}`;
            note.className = "failed";
          });
          const note = el("span", {className: "missing"});
          const figure = el("figure", {className: isProbeRow(layer) ? "probe-row" : null}, layerLabel(data, layer, {compact: true}), image, note);
          return {figure, show: (step) => {
            const ok = hasPicture(layer, step);
            const url = ok ? source.pictureUrl(data.run, layer.name, step, state.probe) : null;
            image.hidden = !url;
            note.className = "missing";
            note.textContent = url ? "" : `not logged at epoch ${epochNumber(step)}`;
            if (url) {
              image.dataset.step = String(step);
              if (image.getAttribute("src") !== url) image.src = url;
            }
          }};
        });
        show(position);
        if (resume) start();
        return [el("div", {className: "slider-list", id: "slider-list"}, ...rows.map((r) => r.figure))];
      }
      return {controls, draw};
    }

    // ------------------------------------------------------------ compare

    function compareView() {
      const stepA = el("select", {id: "step-a", "aria-label": "epoch A"});
      const runB = el("select", {id: "run-b", "aria-label": "run B"});
      const stepB = el("select", {id: "step-b", "aria-label": "epoch B"});
      const runBText = el("span", {className: "run-name"});
      stepA.addEventListener("change", () => { state.compare.stepA = Number(stepA.value); remember(); drawBody(); });
      stepB.addEventListener("change", () => { state.compare.stepB = Number(stepB.value); remember(); drawBody(); });
      runB.addEventListener("change", () => { state.compare.runB = runB.value; remember(); loadRun(runB.value).then(drawBody); });
      const runA = el("span", {className: "run-name"});
      const size = sizeControl(() => drawBody());
      const explanation = el("p", {className: "explain", id: "compare-explanation"});
      const controls = el("div", {className: "controls"},
        el("span", {className: "side"}, "A: ", runA, " ", stepA),
        el("span", {className: "side"}, "B: ", runB, runBText, " ", stepB), size.label, explanation);

      function draw(data) {
        const c = state.compare;
        if (!state.runs.includes(c.runB) || state.failed.has(c.runB)) c.runB = data.run;
        const dataB = state.data.get(c.runB);
        if (!dataB) {
          loadRun(c.runB).then(drawBody);
          return [el("p", {className: "empty", text: "Loading…"})];
        }
        if (!data.steps.includes(c.stepA)) c.stepA = data.steps[0];
        if (!dataB.steps.includes(c.stepB)) c.stepB = dataB.steps[dataB.steps.length - 1];
        runA.textContent = data.run;
        fillSelect(stepA, data.steps.map((s) => [s, `epoch ${epochNumber(s)}`]), c.stepA);
        fillSelect(runB, state.runs.map((r) => [r, r]), c.runB);
        runB.hidden = state.runs.length < 2;
        runBText.hidden = state.runs.length >= 2;
        runBText.textContent = c.runB;
        fillSelect(stepB, dataB.steps.map((s) => [s, `epoch ${epochNumber(s)}`]), c.stepB);
        const layers = visibleLayers(data).filter((l) => dataB.byName.has(l.name));
        const fixed = layers.length > 0 && layers.every((l) => l.infoAt.get(c.stepA)?.normalize === "fixed" && dataB.byName.get(l.name).infoAt.get(c.stepB)?.normalize === "fixed");
        explanation.textContent =
          "B − A of the normalised pictures (each pixel's value in [0, 1], as coloured), drawn on its own range (the ramp's ends: the 99th percentile of |B − A|): red where B is higher, blue where it is lower, white where equal; mean |B − A| under each. " +
          (fixed
            ? "These layers were logged with normalize=\"fixed\" (one scale for every epoch): the difference shows where the pattern changed and how much the activations grew or shrank."
            : "Pictures logged with normalize=\"map\" or \"layer\" each have their own scale, so the difference shows where the pattern changed, not how much the activations changed in size (normalize=\"fixed\" shows that; the Change view measures it).");
        const avail = availableWidth();
        const target = state.size ?? Math.max(MIN_AUTO_SIZE, Math.min(MAX_AUTO_SIZE, Math.floor(avail / 3) - CELL_PAD));
        size.show(target);
        const rows = layers.map((layer) => {
          const other = dataB.byName.get(layer.name);
          const okA = hasPicture(layer, c.stepA);
          const okB = other.logged.has(c.stepB) && state.probe < other.samples;
          const side = (ok, run, who, step) => ok
            ? picture(run, who, step, target)
            : el("span", {className: "missing", text: "not logged"});
          const a = side(okA, data.run, layer, c.stepA);
          const b = side(okB, dataB.run, other, c.stepB);
          if (a.tagName === "IMG") a.classList.add("a");
          if (b.tagName === "IMG") b.classList.add("b");
          const cell = el("td", {className: "difference-cell"});
          const infoA = layer.infoAt.get(c.stepA);
          const infoB = other.infoAt.get(c.stepB);
          const unlike = settingsDiffer(infoA, infoB);
          if (okA && okB) drawDifference(cell, data, dataB, layer, other, target);
          else cell.append(el("span", {className: "missing", text: "—"}));
          if (unlike) cell.append(el("p", {className: "notice-inline", text: `A and B were pictured differently (${unlike}): the difference mixes two scales.`}));
          return el("tr", {}, el("th", {className: "layer", scope: "row"}, layerLabel(data, layer)), el("td", {}, a), el("td", {}, b), cell);
        });
        const missing = visibleLayers(data).length - layers.length;
        const table = el("table", {className: "grid compare", id: "compare"},
          el("thead", {}, el("tr", {}, el("th", {className: "corner", text: "layer"}),
            el("th", {text: `A: ${data.run}, epoch ${epochNumber(c.stepA)}`}),
            el("th", {text: `B: ${dataB.run}, epoch ${epochNumber(c.stepB)}`}),
            el("th", {text: "B − A"}))),
          el("tbody", {}, ...rows));
        const out = [];
        if (state.filter) out.push(el("p", {className: "explain pinned", text: `${layerCount(data, visibleLayers(data))}: clear the filter (✕ in the bar) to see every layer.`}));
        if (missing > 0) out.push(el("p", {className: "explain pinned", text: `${missing} layer(s) of A are not in B's run and are left out.`}));
        out.push(table);
        return out;
      }
      return {controls, draw};
    }

    // Which LayerInfo settings differ between A and B (how values became colours), or "".
    function settingsDiffer(a, b) {
      if (!a || !b) return "";
      return ["normalize", "clip_percentile", "cmap", "layout"].filter((k) => a[k] !== b[k])
        .map((k) => `${k} ${JSON.stringify(a[k])} / ${JSON.stringify(b[k])}`).join(", ");
    }

    async function drawDifference(cell, dataA, dataB, layerA, layerB, target) {
      const c = state.compare;
      const urlA = source.pictureUrl(dataA.run, layerA.name, c.stepA, state.probe);
      const urlB = source.pictureUrl(dataB.run, layerB.name, c.stepB, state.probe);
      const waiting = el("span", {className: "missing", text: "…"});
      cell.prepend(waiting);
      let result;
      try {
        if (!urlA || !urlB) throw new Error("a picture is not in this viewer");
        result = await difference(urlA, urlB, dataA.difference);
      } catch (error) {
        let reason = error.message;
        if (reason === "not loaded") {
          const reasons = (await Promise.all([urlA, urlB].map((url) => source.explain(url)))).filter((r) => r);
          reason = reasons.join(" / ") || "the pictures could not be decoded";
        }
        waiting.replaceWith(el("span", {className: "failed", text: reason}));
        return;
      }
      const shown = displaySize(result.width, result.height, target);
      const caption = `${layerA.name} · B − A: epoch ${epochNumber(c.stepB)} − epoch ${epochNumber(c.stepA)} · probe ${state.probe}`;
      const image = el("img", {className: "difference", "data-render": shown.factor >= 1 ? "pixelated" : "smooth", alt: caption, title: caption,
        width: shown.width, height: shown.height, src: result.url});
      image.dataset.layer = layerA.name;
      image.dataset.step = String(c.stepB);
      image.dataset.mean = String(result.mean);
      image.dataset.range = String(result.range);
      image.dataset.max = String(result.max);
      image.addEventListener("click", () => openZoom({url: result.url, caption, width: result.width, height: result.height}));
      const ramp = el("span", {className: "colour-bar"});
      ramp.style.background = gradient(dataA.difference.palette);
      const range = formatNumber(result.range);
      ramp.title = `B − A from −${range} (blue) to +${range} (red), the 99th percentile of |B − A|; largest |B − A| ${formatNumber(result.max)}`;
      const legend = el("div", {className: "difference-legend"},
        el("span", {className: "colour-legend"}, el("span", {text: result.range ? `−${range}` : "0"}), ramp, el("span", {text: result.range ? `+${range}` : "0"})),
        el("span", {className: "mean", text: `mean |B − A| = ${formatNumber(result.mean)}`}));
      waiting.replaceWith(image, legend);
    }

    // ------------------------------------------------------------ change heat map

    function changeView() {
      const explanation = el("p", {className: "explain", id: "change-explanation"});
      const legend = el("div", {className: "legend", id: "change-legend"});
      const controls = el("div", {className: "controls"}, explanation, legend);

      function draw(data) {
        const layers = visibleLayers(data);
        const scale = data.change_scale;
        explanation.textContent =
          "Change of each layer's activations on the probe batch since the previous logged epoch: the relative L2 change ||a − b|| / ||b|| " +
          `of the layer's maps (each shrunk to at most ${data.coarse_size} × ${data.coarse_size}, raw values), the change/<layer> scalar. ` +
          "Bright: still changing; dark: settled; white: no change at all. Log colour scale. The first logged epoch has nothing to compare with. " +
          `${layerCount(data, layers)}. Click a cell to compare the two epochs.`;
        if (scale.low === null) {
          legend.replaceChildren();
          return [el("p", {className: "empty", text: "No change/<layer> values in this run yet (they start at the second logged epoch; logs of tbviz before this viewer have none)."})];
        }
        drawLegend(scale);
        const heat = el("div", {className: "heat", id: "heatmap"});
        heat.style.gridTemplateColumns = `minmax(8em, max-content) repeat(${data.steps.length}, minmax(12px, 1fr))`;
        heat.append(el("span", {className: "corner", text: "layer \\ epoch"}));
        const labelEvery = Math.max(1, Math.ceil(data.steps.length / 20));
        data.steps.forEach((s, i) => heat.append(el("span", {className: "step", text: i % labelEvery === 0 ? String(epochNumber(s)) : ""})));
        for (const layer of layers) {
          heat.append(el("span", {className: "layer", text: layer.name, title: layer.name}));
          data.steps.forEach((step) => {
            const value = layer.changeAt.get(step);
            const cell = el("span", {className: "heat-cell"});
            cell.dataset.layer = layer.name;
            cell.dataset.step = String(step);
            if (value === undefined || value === null) {
              cell.classList.add("none");
              cell.title = `${layer.name} · epoch ${epochNumber(step)}: no change value (first logged epoch, or not logged)`;
            } else {
              cell.style.background = layer.colourAt.get(step);
              if (value === 0) cell.classList.add("zero");
              const previous = layer.steps[layer.steps.indexOf(step) - 1] ?? step;
              cell.dataset.value = String(value);
              cell.title = `${layer.name} · epoch ${epochNumber(step)}: change ${formatNumber(value)} since epoch ${epochNumber(previous)}`;
              markHealth(cell, layer, step);
              cell.addEventListener("click", () => compareLayer(data, layer.name, previous, step));
            }
            heat.append(cell);
          });
        }
        return [heat];
      }

      // The colour ramp with its values, the colour of exactly 0, and "no value".
      function drawLegend(scale) {
        const ramp = el("span", {className: "ramp"});
        ramp.style.background = `linear-gradient(to right, ${scale.ramp.join(", ")})`;
        const ticks = el("span", {className: "ticks"});
        const ticksAt = scale.ticks ?? [scale.low, scale.high];
        const lo = Math.log10(scale.low), hi = Math.log10(scale.high);
        for (const value of ticksAt) {
          const at = hi > lo ? (Math.log10(value) - lo) / (hi - lo) : 0;
          const tick = el("span", {className: "tick", text: formatNumber(value)});
          tick.style.left = `${(at * 100).toFixed(1)}%`;
          ticks.append(tick);
        }
        const zero = el("span", {className: "swatch zero"});
        zero.style.background = scale.zero ?? "#fff";
        legend.replaceChildren(
          el("span", {className: "legend-item"}, el("span", {className: "ramp-box"}, ramp, ticks), " change (log scale)"),
          el("span", {className: "legend-item"}, zero, " 0: no change"),
          el("span", {className: "legend-item"}, el("span", {className: "swatch none"}), " no value"));
      }
      return {controls, draw};
    }

    // ------------------------------------------------------------ enlarged picture

    function openZoom(what) {
      state.zoom = {...what};
      if (what.run && what.run !== state.run) state.zoom.run = what.run;
      remember();
      showZoom();
      ui.zoom.focus({preventScroll: true});
    }

    function closeZoom() {
      state.zoom = null;
      remember();
      ui.zoom.hidden = true;
      ui.root.classList.remove("zooming");
    }

    function zoomKeys(event) {
      const keys = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
      if (event.key === "Escape") { closeZoom(); event.preventDefault(); return; }
      if (keys[event.key] && state.zoom?.layer) {
        stepZoom(...keys[event.key]);
        event.preventDefault();
      }
    }

    // Moves the enlarged picture `layers` layers down and `epochs` logged epochs on.
    function stepZoom(layers, epochs) {
      const data = state.data.get(state.zoom.run ?? state.run) ?? current();
      const shown = visibleLayers(data);
      let index = shown.findIndex((l) => l.name === state.zoom.layer);
      index = Math.min(shown.length - 1, Math.max(0, index + layers));
      const layer = shown[index] ?? data.byName.get(state.zoom.layer);
      const steps = layer.steps;
      let at = steps.indexOf(state.zoom.step);
      if (at < 0) at = steps.findIndex((s) => s > state.zoom.step);
      if (at < 0) at = steps.length - 1;
      at = Math.min(steps.length - 1, Math.max(0, at + epochs));
      state.zoom = {run: data.run, layer: layer.name, step: steps[at]};
      remember();
      showZoom();
    }

    function showZoom() {
      const z = state.zoom;
      const box = ui.zoom;
      ui.root.classList.add("zooming");
      box.hidden = false;
      const close = el("button", {type: "button", className: "close", text: "✕", title: "Close (Esc)", onclick: closeZoom});
      const room = {width: Math.max(200, ui.root.clientWidth - 420), height: Math.max(200, ui.root.clientHeight - 160)};
      if (!z.layer) {  // a difference picture
        const shown = displaySize(z.width, z.height, Math.min(room.width, room.height));
        box.replaceChildren(el("figure", {},
          el("div", {className: "zoom-head"}, el("span", {className: "caption", text: z.caption}), close),
          el("img", {src: z.url, alt: z.caption, width: shown.width, height: shown.height, "data-render": shown.factor >= 1 ? "pixelated" : "smooth"})));
        return;
      }
      const data = state.data.get(z.run ?? state.run);
      const layer = data?.byName.get(z.layer);
      if (!layer) { closeZoom(); return; }
      const steps = layer.steps;
      const at = steps.indexOf(z.step);
      const previous = el("button", {type: "button", className: "previous", text: "◀ epoch", title: "Previous logged epoch (←)", disabled: at <= 0 ? "" : null,
        onclick: () => stepZoom(0, -1)});
      const next = el("button", {type: "button", className: "next", text: "epoch ▶", title: "Next logged epoch (→)", disabled: at >= steps.length - 1 ? "" : null,
        onclick: () => stepZoom(0, 1)});
      const caption = el("span", {className: "caption", id: "zoom-caption",
        text: `${layer.name} · epoch ${epochNumber(z.step)} (${at + 1} of ${plural(steps.length, "logged epoch")}) · probe ${state.probe}`});
      const url = hasPicture(layer, z.step) ? source.pictureUrl(data.run, layer.name, z.step, state.probe) : null;
      const shown = displaySize(layer.width, layer.height, Math.min(room.width, room.height));
      const image = url
        ? el("img", {src: url, alt: caption.textContent, width: shown.width, height: shown.height, "data-render": shown.factor >= 1 ? "pixelated" : "smooth", id: "zoom-image"})
        : el("span", {className: "missing", text: "not logged at this epoch"});
      if (url) {
        image.dataset.step = String(z.step);
        image.addEventListener("error", () => explainFailure(image, url));
      }
      const numbers = el("table", {className: "numbers", id: "zoom-numbers"});
      const held = layer.healthAt.get(z.step) ?? [];
      const side = el("aside", {}, layerLabel(data, layer), numbers,
        held.length ? el("p", {className: "held", text: `Findings at this epoch: ${held.map((f) => `${f.kind} (${f.severity})`).join(", ")}`}) : null,
        el("p", {className: "hint", text: "←/→ epochs · ↑/↓ layers · Esc closes"}));
      box.replaceChildren(el("figure", {},
        el("div", {className: "zoom-head"}, previous, caption, next, close),
        el("div", {className: "zoom-main"}, image, side)));
      numbersOf(data.run, layer.name).then((answer) => {
        if (state.zoom !== z || !answer) return;
        const i = answer.steps.indexOf(z.step);
        const rows = Object.entries(answer.numbers).map(([kind, list]) =>
          el("tr", {"data-kind": kind}, el("th", {text: NUMBER_TITLES[kind] ?? kind}), el("td", {text: formatNumber(list[i])})));
        numbers.replaceChildren(el("caption", {text: `at epoch ${epochNumber(z.step)}`}), ...rows);
      });
    }
  }

  // A viewer from an embedded document (tbviz/plugin/html.py): `host` holds its JSON.
  function mountEmbedded(host) {
    const doc = JSON.parse(host.querySelector("script.tbviz-data").textContent);
    host.querySelector(".tbviz-fallback")?.remove();
    const container = el("div", {className: "tbviz-mount"});
    host.append(container);
    return mount(container, embeddedSource(doc), {mode: host.dataset.mode ?? "embedded", key: host.dataset.key});
  }

  Object.assign(globalThis.tbvizViewer, {mount, mountEmbedded, serverSource, embeddedSource, epochNumber});
})();
