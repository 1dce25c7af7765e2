// The live panel of `tinynet explore --watch RUN_DIR` (tinynet/explore/server.py): polls the
// server's JSON every poll_ms and draws, in <section id="live">, with the explorer's helpers
// (window.tinynetExplorer): the loss and accuracy curves, each layer's gradient norm and update
// ratio at a logged step, and the activations of the run's fixed test image at a logged step.
// Each poll starts when the last one has ended; one that finds nothing new costs a 304.
(function () {
  "use strict";
  const data = window.TINYNET_DATA || {};
  const watch = data.watch;
  const section = document.getElementById("live");
  const ex = window.tinynetExplorer;
  if (!watch || !section || !ex) return;
  const el = ex.el, fmt = ex.fmt;
  const STATES = {
    waiting: "waiting for the run to write its first step",
    training: "training",
    finished: "finished",
    stopped: "stopped before its last epoch",
    ended: "not running",
  };
  if (!data.ops) { // no network on this page: only the live panel
    for (const id of ["header", "explorer"]) document.getElementById(id).style.display = "none";
  }
  document.head.append(el("style", { text:
    "section#live { padding: 8px 14px; border-top: 1px solid #d5dce8; }" +
    ".live-row, .live-summaries { display: flex; flex-wrap: wrap; gap: 12px; }" +
    "canvas.live-chart { border: 1px solid #eee; } .live-summaries .summary { width: 320px; }" }));

  const COLORS = ["#3b6db3", "#d0602a", "#2f9d55", "#8a4fb8"];
  const chart = (id) => el("canvas", { id: id, class: "live-chart", "data-points": "0" });
  const box = (canvas) => el("div", {}, canvas); // the chart and, after it, its legend
  const stepChoice = (id) => el("select", { id: id, "aria-label": "logged step" });
  const parts = {
    run: el("h2", { text: "Live" }),
    status: el("p", { id: "live-status", role: "status", text: "connecting…" }),
    loss: chart("live-loss"),
    accuracy: chart("live-accuracy"),
    layerStep: stepChoice("live-layer-step"),
    gradNorm: chart("live-grad-norm"),
    updateRatio: chart("live-update-ratio"),
    layerTable: el("tbody"),
    activationStep: stepChoice("live-activation-step"),
    activations: el("div", { id: "live-activations", class: "live-summaries" }),
  };
  section.append(
    parts.run, parts.status,
    el("div", { class: "live-row" }, box(parts.loss), box(parts.accuracy)),
    el("h3", {}, "Layers at step ", parts.layerStep),
    el("div", { class: "live-row" }, box(parts.gradNorm), box(parts.updateRatio)),
    el("details", {}, el("summary", { text: "each layer's numbers" }),
      el("table", { class: "stats" }, el("thead", {}, el("tr", {},
        el("th", { text: "layer" }), el("th", { text: "‖∂L/∂W‖" }),
        el("th", { text: "‖ΔW‖/‖W‖" }))), parts.layerTable)),
    el("h3", {}, "Activations of a fixed test image at step ", parts.activationStep),
    parts.activations,
  );

  const tags = {}; // url -> [ETag, the JSON it tagged]
  const view = { metrics: null, layers: null, activations: null, seen: null };

  async function get(name) {
    const url = watch.endpoints[name];
    const headers = tags[url] ? { "If-None-Match": tags[url][0] } : {};
    const answer = await fetch(url, { headers: headers, cache: "no-cache" });
    if (answer.status === 304 && tags[url]) return tags[url][1];
    if (!answer.ok) throw new Error(url + " answered " + answer.status);
    const json = await answer.json();
    tags[url] = [answer.headers.get("ETag"), json];
    return json;
  }

  async function poll() {
    try {
      const metrics = await get("metrics");
      const points = metrics.points, last = points.length ? points[points.length - 1].step : -1;
      const seen = last + "/" + metrics.epochs.length;
      if (seen !== view.seen) { // something new: the layers and activations may be too
        view.layers = await get("layers");
        view.activations = await get("activations");
        view.seen = seen;
      }
      view.metrics = metrics;
      draw();
    } catch (error) {
      parts.status.textContent = "cannot reach the server (" + error.message + "); retrying";
    }
    setTimeout(poll, watch.poll_ms);
  }

  function draw() {
    const m = view.metrics, run = m.run;
    parts.run.textContent = "Live: " + m.name + (run.model ? " (" + run.model + " on " +
      run.dataset + ", logged every " + (run.every === 1 ? "step" : run.every + " steps") + ")" : "");
    let status = STATES[m.state] || m.state;
    if (m.points.length) {
      const p = m.points[m.points.length - 1];
      status += " · step " + p.step + ", epoch " + p.epoch + (run.epochs ? " of " + run.epochs : "") +
        " · batch loss " + fmt(p.loss) + ", top-1 " + (100 * p.top1).toFixed(1) + "%";
    } else if (m.state !== "waiting") {
      status += " · no per-step points (train with --explore-every N for them)";
    }
    if (m.epochs.length) {
      const e = m.epochs[m.epochs.length - 1];
      status += " · after epoch " + e.epoch + ": test loss " + fmt(e.test_loss) + ", test top-1 " +
        (100 * e.test_top1).toFixed(2) + "%";
    }
    parts.status.textContent = status + (m.state === "waiting" ? "…" : "");
    parts.status.dataset.state = m.state;
    // Per-epoch records sit at the step their epoch ends, when the steps are known.
    const perEpoch = run.steps_per_epoch;
    const x = perEpoch ? "step" : "epoch";
    const atEpoch = (e) => (perEpoch ? e.epoch * perEpoch : e.epoch);
    curve(parts.loss, "loss by " + x, [
      series("train, batch", m.points, (p) => p.step, (p) => p.loss),
      series("train, epoch", m.epochs, atEpoch, (e) => e.train_loss),
      series("test, epoch", m.epochs, atEpoch, (e) => e.test_loss),
    ]);
    curve(parts.accuracy, "top-1 accuracy by " + x, [
      series("train, batch", m.points, (p) => p.step, (p) => p.top1),
      series("train, epoch", m.epochs, atEpoch, (e) => e.train_top1),
      series("test, epoch", m.epochs, atEpoch, (e) => e.test_top1),
    ]);
    drawLayers();
    drawActivations();
  }

  function series(name, items, x, y) {
    const points = items.map((item) => [x(item), y(item)])
      .filter((p) => typeof p[1] === "number" && Number.isFinite(p[1]));
    return { name: name, points: points };
  }

  // A line chart with a legend under it (each series' colour, name and number of points);
  // data-points counts the points drawn.
  function curve(canvas, title, lines) {
    const drawn = lines.map((s, k) => Object.assign({ color: COLORS[k % COLORS.length] }, s))
      .filter((s) => s.points.length);
    ex.drawLineChart(canvas, drawn, { title: title, width: 460 });
    canvas.dataset.points = String(drawn.reduce((n, s) => n + s.points.length, 0));
    let legend = canvas.nextElementSibling;
    if (!legend || !legend.classList.contains("live-legend")) {
      legend = el("div", { class: "live-legend note" });
      canvas.after(legend);
    }
    legend.textContent = "";
    for (const s of drawn) {
      legend.append(el("span", { style: "color: " + s.color, text: "■ " }),
        s.name + " (" + s.points.length + ")  ");
    }
  }

  // A <select> of the logged steps of ``records``: it follows the latest unless the user has
  // chosen an earlier one. Returns the chosen record.
  function chosen(select, records) {
    const steps = records.map((r) => String(r.step));
    const follow = !select.value || select.value === select.dataset.latest;
    const keep = select.value;
    select.textContent = "";
    for (const step of steps) select.append(el("option", { value: step, text: step }));
    const latest = steps.length ? steps[steps.length - 1] : "";
    select.value = follow || !steps.includes(keep) ? latest : keep;
    select.dataset.latest = latest;
    return records[steps.indexOf(select.value)];
  }

  function drawLayers() {
    const layers = view.layers || { names: [], records: [] };
    const record = chosen(parts.layerStep, layers.records);
    const norms = record ? record.grad_norm : [], ratios = record ? record.update_ratio : [];
    const log = (values) => values.map((v, i) => [i, v > 0 ? Math.log10(v) : null]);
    curve(parts.gradNorm, "log10 gradient norm by layer (forward order)",
      [{ name: "‖∂L/∂W‖", points: log(norms).filter((p) => p[1] !== null) }]);
    const reference = ratios.length ? [[0, -3], [ratios.length - 1, -3]] : [];
    curve(parts.updateRatio, "log10 update ratio by layer",
      [{ name: "‖ΔW‖/‖W‖", points: log(ratios).filter((p) => p[1] !== null) },
       { name: "1e-3", points: reference }]);
    parts.layerTable.textContent = "";
    layers.names.forEach((name, i) => parts.layerTable.append(el("tr", {},
      el("th", { text: name }), el("td", { text: fmt(norms[i]) }),
      el("td", { text: fmt(ratios[i]) }))));
  }

  function drawActivations() {
    const found = view.activations || { snapshots: [] };
    const snapshot = chosen(parts.activationStep, found.snapshots);
    parts.activations.textContent = "";
    if (!snapshot) return;
    if (found.input) parts.activations.append(ex.summaryBlock("input image", found.input));
    for (const module of snapshot.modules)
      parts.activations.append(ex.summaryBlock(module.name, module));
  }

  parts.layerStep.addEventListener("change", () => view.metrics && drawLayers());
  parts.activationStep.addEventListener("change", () => view.metrics && drawActivations());
  poll();
})();
