/* tinynet explorer: the module tree, the graph of the opened module, a node's values and
 * gradients, and the Backward stepper, drawn from window.TINYNET_DATA (tinynet/explore/page.py).
 * The drawing helpers are on window.tinynetExplorer for other panels (the live one) to reuse. */
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const MAX_OPEN_OPS = 60; // a module with more ops is drawn with its children collapsed
  const NODE_W = 168, NODE_H = 42, GAP_X = 22, GAP_Y = 30;

  // ------------------------------------------------------------------ small helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "NaN/inf";
    if (value === 0) return "0";
    const a = Math.abs(value);
    return a >= 1e4 || a < 1e-3 ? value.toExponential(3) : String(Number(value.toPrecision(4)));
  }

  function shapeText(shape) {
    return "(" + shape.join(", ") + ")";
  }

  // ------------------------------------------------------------------ reusable drawings
  /** A histogram {lo, hi, counts} as bars on a canvas. */
  function drawHistogram(canvas, histogram, options) {
    const opts = Object.assign({ color: "#3b6db3", width: 300, height: 110 }, options);
    canvas.width = opts.width;
    canvas.height = opts.height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const counts = histogram.counts;
    const top = Math.max(...counts, 1);
    const plotH = canvas.height - 16;
    const barW = canvas.width / counts.length;
    ctx.fillStyle = opts.color;
    counts.forEach(function (count, i) {
      const h = count ? Math.max(1, (count / top) * plotH) : 0;
      ctx.fillRect(i * barW + 0.5, plotH - h, barW - 1, h);
    });
    ctx.fillStyle = "#333";
    ctx.font = "10px sans-serif";
    ctx.textAlign = "left";
    ctx.fillText(fmt(histogram.lo), 1, canvas.height - 3);
    ctx.textAlign = "right";
    ctx.fillText(fmt(histogram.hi), canvas.width - 1, canvas.height - 3);
    if (histogram.lo < 0 && histogram.hi > 0) {
      const zero = (-histogram.lo / (histogram.hi - histogram.lo)) * canvas.width;
      ctx.strokeStyle = "#c33";
      ctx.beginPath();
      ctx.moveTo(zero, 0);
      ctx.lineTo(zero, plotH);
      ctx.stroke();
    }
    return canvas;
  }

  function colour(byte, signed) {
    if (signed) { // blue (negative), white (zero), red (positive)
      const t = (byte - 128) / 127;
      return t >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 + t), 255 * (1 + t), 255];
    }
    const t = byte / 255; // dark blue to yellow
    return [255 * Math.min(1, 1.6 * t * t), 40 + 200 * t, 110 + 60 * Math.sin(Math.PI * t) - 90 * t];
  }

  /** Feature maps {channels, height, width, lo, hi, signed, pixels (base64 bytes)} as a row of
   * small pictures, each titled with its channel, into ``container`` (emptied first). */
  function drawFeatureMaps(container, maps, options) {
    const opts = Object.assign({ scale: Math.max(1, Math.floor(72 / maps.width)) }, options);
    container.textContent = "";
    const bytes = Uint8Array.from(atob(maps.pixels), function (c) { return c.charCodeAt(0); });
    const plane = maps.height * maps.width;
    maps.channels.forEach(function (channel, k) {
      const canvas = el("canvas", { class: "map", title: "channel " + channel });
      canvas.width = maps.width;
      canvas.height = maps.height;
      canvas.style.width = maps.width * opts.scale + "px";
      canvas.style.height = maps.height * opts.scale + "px";
      const ctx = canvas.getContext("2d");
      const image = ctx.createImageData(maps.width, maps.height);
      for (let i = 0; i < plane; i++) {
        const rgb = colour(bytes[k * plane + i], maps.signed);
        image.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * i);
      }
      ctx.putImageData(image, 0, 0);
      container.append(el("figure", {}, canvas, el("figcaption", { text: "c" + channel })));
    });
    container.append(el("p", { class: "note", text:
      "scale " + fmt(maps.lo) + " … " + fmt(maps.hi) +
      (maps.step > 1 ? ", one pixel in " + maps.step + " across and down" : "") }));
    return container;
  }

  /** Line chart of series [{name, points: [[x, y], ...], color}] on a canvas. */
  function drawLineChart(canvas, series, options) {
    const opts = Object.assign({ width: 420, height: 180, title: "" }, options);
    canvas.width = opts.width;
    canvas.height = opts.height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const all = series.flatMap(function (s) { return s.points; })
      .filter(function (p) { return Number.isFinite(p[1]); });
    if (!all.length) return canvas;
    const xs = all.map(function (p) { return p[0]; }), ys = all.map(function (p) { return p[1]; });
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
    const left = 44, right = 8, topPad = opts.title ? 18 : 6, bottom = 18;
    const px = function (x) { return left + ((x - x0) / (x1 - x0)) * (canvas.width - left - right); };
    const py = function (y) { return topPad + (1 - (y - y0) / (y1 - y0)) * (canvas.height - topPad - bottom); };
    ctx.strokeStyle = "#999";
    ctx.strokeRect(left, topPad, canvas.width - left - right, canvas.height - topPad - bottom);
    ctx.fillStyle = "#333";
    ctx.font = "10px sans-serif";
    ctx.textAlign = "right";
    ctx.fillText(fmt(y1), left - 3, topPad + 8);
    ctx.fillText(fmt(y0), left - 3, canvas.height - bottom);
    ctx.textAlign = "left";
    ctx.fillText(fmt(x0), left, canvas.height - 5);
    ctx.textAlign = "right";
    ctx.fillText(fmt(x1), canvas.width - right, canvas.height - 5);
    if (opts.title) { ctx.textAlign = "left"; ctx.fillText(opts.title, left, 12); }
    const palette = ["#3b6db3", "#d0602a", "#2f9d55", "#8a4fb8", "#b3a13b"];
    series.forEach(function (s, k) {
      ctx.strokeStyle = s.color || palette[k % palette.length];
      ctx.beginPath();
      s.points.filter(function (p) { return Number.isFinite(p[1]); }).forEach(function (p, i) {
        if (i) ctx.lineTo(px(p[0]), py(p[1])); else ctx.moveTo(px(p[0]), py(p[1]));
      });
      ctx.stroke();
    });
    return canvas;
  }

  /** A value's statistics (page.py's summary) as a small table. */
  function statsTable(summary) {
    const rows = [["shape", shapeText(summary.shape)]];
    if (summary.scalar !== undefined) rows.push(["value", fmt(summary.scalar)]);
    for (const key of ["min", "max", "mean", "std", "norm"]) rows.push([key, fmt(summary[key])]);
    if (summary.zeros !== null) rows.push(["zeros", (100 * summary.zeros).toFixed(1) + "%"]);
    if (summary.nonfinite) rows.push(["NaN or inf", String(summary.nonfinite)]);
    return el("table", { class: "stats" }, ...rows.map(function (row) {
      return el("tr", {}, el("th", { text: row[0] }), el("td", { text: row[1] }));
    }));
  }

  /** Statistics, histogram and feature maps of a summary, under a heading. */
  function summaryBlock(heading, summary, colour) {
    const block = el("div", { class: "summary" }, el("h3", { text: heading }), statsTable(summary));
    if (summary.histogram) block.append(drawHistogram(el("canvas", { class: "histogram" }),
      summary.histogram, { color: colour || "#3b6db3" }));
    if (summary.maps) block.append(drawFeatureMaps(el("div", { class: "maps" }), summary.maps));
    return block;
  }

  const api = { el, fmt, drawHistogram, drawFeatureMaps, drawLineChart, statsTable, summaryBlock };
  window.tinynetExplorer = api;

  const data = window.TINYNET_DATA;
  if (!data || !data.ops) return; // a page without a network (the live panel's own)

  // ------------------------------------------------------------------ the data, indexed
  const nodes = new Map();
  data.ops.forEach(function (op) { nodes.set(op.id, op); });
  data.leaves.forEach(function (leaf) { nodes.set(leaf.id, leaf); });
  const modules = new Map([["", { name: "", type: "model" }]]);
  data.modules.forEach(function (m) { modules.set(m.name, m); });
  const membersOf = function (name) {
    return data.ops.filter(function (op) { return !name || op.scope.includes(name); });
  };
  const childOf = function (op, name) { // op's module one level below ``name``, or null
    const i = name ? op.scope.indexOf(name) : -1;
    return i + 1 < op.scope.length ? op.scope[i + 1] : null;
  };
  const shown = function (leaf) { return leaf.kind === "input"; };
  const label = function (node) {
    return node.op ? node.op : node.name;
  };

  const state = { module: null, selected: null, step: -1, keyOf: new Map(), timer: null };

  // ------------------------------------------------------------------ header
  const header = document.getElementById("header");
  header.append(el("h1", { text: data.title }));
  const facts = el("dl", { class: "info" });
  for (const [key, value] of Object.entries(data.info || {})) {
    facts.append(el("dt", { text: key }), el("dd", { text: value }));
  }
  facts.append(el("dt", { text: "ops" }), el("dd", { text: String(data.ops.length) }));
  header.append(facts);

  // ------------------------------------------------------------------ the module tree
  function treeItem(name) {
    const module = modules.get(name);
    const children = [...modules.keys()].filter(function (child) {
      return child && (name ? child.startsWith(name + ".") &&
        !child.slice(name.length + 1).includes(".") : !child.includes("."));
    });
    const ownOps = membersOf(name).filter(function (op) {
      return op.scope[op.scope.length - 1] === name || (!name && !op.scope.length);
    });
    const title = el("span", { class: "module-name", text: name ? name.split(".").pop() : "model" });
    const kind = el("span", { class: "module-type", text: module.type });
    const item = el("li", { class: "module", "data-module": name }, title, " ", kind);
    const hasChildren = children.length > 0;
    if (children.length) {
      const list = el("ul", {});
      children.forEach(function (child) { list.append(treeItem(child)); });
      ownOps.forEach(function (op) {
        list.append(el("li", { class: "tree-op", "data-node": op.id,
          onclick: function (event) { event.stopPropagation(); openModule(name); select(op.id); } },
          el("span", { text: op.op.toLowerCase() + " " + shapeText(op.shape) })));
      });
      item.append(list);
      item.classList.add(name ? "collapsed" : "expanded");
    }
    title.addEventListener("click", function (event) {
      event.stopPropagation();
      if (hasChildren && name) { // opening expands; a second click on the open one folds it
        const fold = state.module === name && item.classList.contains("expanded");
        item.classList.toggle("collapsed", fold);
        item.classList.toggle("expanded", !fold);
      }
      openModule(name);
    });
    return item;
  }

  const tree = document.getElementById("tree");
  tree.append(el("h2", { text: "Modules" }), el("ul", { class: "tree" }, treeItem("")));

  // ------------------------------------------------------------------ the graph
  const graphPanel = document.getElementById("graph");
  const graphTitle = el("h2", {});
  const graphBox = el("div", { class: "graph-box" });
  graphPanel.append(graphTitle, graphBox);

  function openModule(name) {
    state.module = name;
    document.querySelectorAll("#tree li.module").forEach(function (li) {
      li.classList.toggle("open", li.dataset.module === name);
    });
    let cursor = name; // the tree shows the opened module
    while (cursor) {
      const li = document.querySelector('#tree li.module[data-module="' + cursor + '"]');
      if (li && li.classList.contains("collapsed") && cursor !== name) {
        li.classList.replace("collapsed", "expanded");
      }
      cursor = cursor.includes(".") ? cursor.slice(0, cursor.lastIndexOf(".")) : "";
    }
    drawGraph(name);
  }

  function drawGraph(name) {
    const members = membersOf(name);
    const collapse = !name || members.length > MAX_OPEN_OPS;
    const collapsible = collapse && members.some(function (op) { return childOf(op, name); });
    const boxes = new Map(); // display key -> {key, kind, label, sub, ids, inputs, group}
    const keyOf = new Map();
    members.forEach(function (op) {
      const child = childOf(op, name);
      const key = collapsible && child ? "module:" + child : op.id;
      keyOf.set(op.id, key);
      if (!boxes.has(key)) {
        boxes.set(key, key.startsWith("module:")
          ? { key, kind: "module", module: child, label: child.split(".").pop(),
            sub: modules.get(child).type, ids: [], group: child }
          : { key, kind: "op", label: op.op, sub: shapeText(op.shape), ids: [],
            group: child || "" });
      }
      const box = boxes.get(key);
      box.ids.push(op.id);
      if (box.kind === "module") box.sub = modules.get(child).type + " " + shapeText(op.shape);
      else if (op.value && op.value.scalar !== undefined) box.value = op;
    });
    const edges = [];
    const addEdge = function (a, b) {
      if (a !== b && !edges.some(function (e) { return e[0] === a && e[1] === b; })) edges.push([a, b]);
    };
    members.forEach(function (op) {
      op.inputs.forEach(function (source) {
        if (source === null) return;
        let from = keyOf.get(source);
        if (!from) {
          const node = nodes.get(source);
          if (!node.op && !shown(node)) return; // parameters, buffers, constants: in the details
          from = node.op ? "from:" + source : source;
          if (!boxes.has(from)) {
            boxes.set(from, node.op
              ? { key: from, kind: "outside", label: "from " + (node.scope.slice(-1)[0] || node.op),
                sub: shapeText(node.shape), ids: [source], group: "" }
              : { key: from, kind: "leaf", label: node.name, sub: shapeText(node.shape),
                ids: [source], group: "", value: node });
          }
        }
        addEdge(from, keyOf.get(op.id));
      });
    });
    state.keyOf = keyOf;
    data.leaves.forEach(function (leaf) { if (boxes.has(leaf.id)) keyOf.set(leaf.id, leaf.id); });
    layout(boxes, edges);
    render(name, boxes, edges, collapsible);
  }

  function layout(boxes, edges) {
    const rank = new Map();
    const order = [...boxes.keys()];
    order.forEach(function (key) { rank.set(key, 0); });
    for (let pass = 0; pass < order.length; pass++) { // longest path from the sources
      let changed = false;
      edges.forEach(function (e) {
        if (rank.get(e[1]) < rank.get(e[0]) + 1) { rank.set(e[1], rank.get(e[0]) + 1); changed = true; }
      });
      if (!changed) break;
    }
    // Columns follow chains: a node continues its only input's column when it is that input's
    // only reader (an Inception branch stays in one column); else a node alone in its row is
    // centred, and any other starts a column. Nodes of one column differ in rank: no overlap.
    const inputs = new Map(), readers = new Map();
    order.forEach(function (key) { inputs.set(key, []); readers.set(key, []); });
    edges.forEach(function (e) { readers.get(e[0]).push(e[1]); inputs.get(e[1]).push(e[0]); });
    const byRank = order.slice().sort(function (a, b) { return rank.get(a) - rank.get(b); });
    const inRow = new Map();
    byRank.forEach(function (key) { inRow.set(rank.get(key), (inRow.get(rank.get(key)) || 0) + 1); });
    const column = new Map();
    let columns = 0;
    byRank.forEach(function (key) {
      const from = inputs.get(key);
      if (from.length === 1 && readers.get(from[0]).length === 1 && column.get(from[0]) !== null) {
        column.set(key, column.get(from[0]));
      } else column.set(key, inRow.get(rank.get(key)) === 1 ? null : columns++);
    });
    columns = Math.max(columns, 1);
    order.forEach(function (key) {
      const box = boxes.get(key), col = column.get(key);
      box.x = 10 + (col === null ? (columns - 1) / 2 : col) * (NODE_W + GAP_X);
      box.y = 10 + rank.get(key) * (NODE_H + GAP_Y);
    });
    boxes.groups = []; // the child modules whose nodes share a column get a named box
    order.forEach(function (key) {
      const g = boxes.get(key).group;
      if (!g || boxes.groups.includes(g)) return;
      const cols = new Set([...boxes.values()].filter(function (b) { return b.group === g; })
        .map(function (b) { return b.x; }));
      if (cols.size === 1 && columns > 1) boxes.groups.push(g);
    });
    boxes.width = 20 + columns * (NODE_W + GAP_X);
    boxes.height = 20 + (Math.max(...rank.values()) + 1) * (NODE_H + GAP_Y);
  }

  function render(name, boxes, edges, collapsed) {
    graphTitle.textContent = (name || "model") + (collapsed ? " (children collapsed: click one to open it)" : "");
    graphBox.textContent = "";
    const root = svg("svg", { width: boxes.width, height: boxes.height, class: "graph" });
    root.append(svg("defs", {}));
    root.firstChild.innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" ' +
      'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker>';
    boxes.groups.forEach(function (group) { // a box around each branch, named
      const members = [...boxes.values()].filter(function (b) { return b.group === group; });
      const x = Math.min(...members.map(function (b) { return b.x; })) - 6;
      const y = Math.min(...members.map(function (b) { return b.y; })) - 16;
      const bottom = Math.max(...members.map(function (b) { return b.y; })) + NODE_H + 6;
      const box = svg("g", { class: "cluster", "data-group": group });
      box.append(svg("rect", { x, y, width: NODE_W + 12, height: bottom - y, rx: 8 }));
      const name = svg("text", { x: x + 6, y: y + 11 });
      name.textContent = group.split(".").pop() + " · " + modules.get(group).type;
      box.append(name);
      root.append(box);
    });
    edges.forEach(function (e) {
      const a = boxes.get(e[0]), b = boxes.get(e[1]);
      const x1 = a.x + NODE_W / 2, x2 = b.x + NODE_W / 2, y2 = b.y;
      const y1 = Math.max(a.y + NODE_H, y2 - GAP_Y); // down its own column, then across
      const down = y1 > a.y + NODE_H ? "M" + x1 + "," + (a.y + NODE_H) + " L" : "M";
      root.append(svg("path", { class: "edge", "marker-end": "url(#arrow)",
        d: down + x1 + "," + y1 + " C" + x1 + "," + (y1 + GAP_Y / 2) + " " + x2 + "," +
          (y2 - GAP_Y / 2) + " " + x2 + "," + y2 }));
    });
    boxes.forEach(function (box) {
      const group = svg("g", { class: "node " + box.kind, "data-key": box.key,
        "data-node": box.kind === "module" ? box.ids[box.ids.length - 1] : box.ids[0],
        transform: "translate(" + box.x + "," + box.y + ")" });
      if (box.kind === "module") group.setAttribute("data-module", box.module);
      group.append(svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
      const t1 = svg("text", { x: 8, y: 17, class: "label" });
      t1.textContent = box.label;
      const t2 = svg("text", { x: 8, y: 33, class: "sub" });
      t2.textContent = box.value ? valueText(box.value) : box.sub;
      group.append(t1, t2);
      const title = svg("title", {});
      title.textContent = box.kind === "module" ? "open " + box.module : box.ids.join(", ");
      group.append(title);
      group.addEventListener("click", function () {
        if (box.kind === "module") openModule(box.module);
        else if (box.kind === "outside") { const n = nodes.get(box.ids[0]); openModule(parentToShow(n)); select(n.id); }
        else select(box.ids[0]);
      });
      root.append(group);
    });
    graphBox.append(root);
    paint();
  }

  function valueText(node) {
    const v = node.value && node.value.scalar !== undefined ? "= " + fmt(node.value.scalar) : shapeText(node.shape);
    const g = node.grad && node.grad.scalar !== undefined && reached(node.id) ? "  grad " + fmt(node.grad.scalar) : "";
    return v + g;
  }

  /** The module whose graph shows ``node`` open: the outermost of its modules small enough. */
  function parentToShow(node) {
    if (!node.op) return "";
    for (const name of node.scope) if (membersOf(name).length <= MAX_OPEN_OPS) return name;
    return node.scope.length ? node.scope[node.scope.length - 1] : "";
  }

  // ------------------------------------------------------------------ details of a node
  const details = document.getElementById("details");

  function select(id) {
    state.selected = id;
    const node = nodes.get(id);
    details.textContent = "";
    const where = node.op ? (node.scope.length ? node.scope[node.scope.length - 1] : "(model)") : node.kind;
    details.append(el("h2", { text: label(node) + " " + shapeText(node.shape) }),
      el("p", { class: "where", text: id + " in " + where }));
    details.append(el("p", { class: "shape" }, "output shape ", el("code", { id: "node-shape", text: shapeText(node.shape) })));
    if (node.op) {
      const params = Object.entries(node.params).map(function (p) { return p[0] + "=" + p[1]; }).join(", ");
      if (params) details.append(el("p", { class: "params", text: params }));
      const ins = node.inputs.filter(function (k) { return k !== null; }).map(function (k) {
        const n = nodes.get(k);
        return (n.op ? n.op + " " + k : n.kind + " " + n.name) + " " + shapeText(n.shape);
      });
      details.append(el("p", { class: "inputs", text: "inputs: " + ins.join("; ") }));
      const weights = node.inputs.map(function (k) { return k === null ? null : nodes.get(k); })
        .filter(function (n) { return n && (n.kind === "parameter" || n.kind === "buffer"); });
      if (weights.length) details.append(parameterTable(weights, reached(id)));
    }
    if (node.value) details.append(summaryBlock("value", node.value, "#3b6db3"));
    if (node.grad && node.grad.shape) {
      if (reached(id)) details.append(summaryBlock("gradient dL/d(value)", node.grad, "#c0392b"));
      else details.append(el("p", { class: "note", text: "the gradient has not arrived yet: step the backward" }));
    }
    const step = data.backward.find(function (s) { return s.node === id; });
    if (step && step.rule && reached(id)) details.append(ruleBlock(step.rule, node));
    paint();
  }

  /** The op's parameters: shape, value statistics and, after the backward, |gradient|. */
  function parameterTable(weights, withGrad) {
    const head = ["parameter", "shape", "mean", "std", "|grad|"];
    const rows = weights.map(function (w) {
      const grad = withGrad && w.grad ? fmt(w.grad.norm) : "";
      return [w.name.split(".").pop(), shapeText(w.shape), fmt(w.value.mean), fmt(w.value.std), grad];
    });
    return el("table", { class: "stats parameters" },
      el("tr", {}, ...head.map(function (h) { return el("th", { text: h }); })),
      ...rows.map(function (row) {
        return el("tr", { title: "" }, ...row.map(function (cell) { return el("td", { text: cell }); }));
      }));
  }

  function ruleBlock(rule, node) {
    const block = el("div", { class: "rule" }, el("h3", { text: "backward rule, one element" }));
    if (rule.element) {
      const input = nodes.get(node.inputs[rule.input]);
      block.append(el("p", { class: "note", text: "input " + rule.input + " (" +
        (input.op ? input.op : input.name) + ")" +
        (rule.element.length ? ", element [" + rule.element.join(", ") + "]" : "") }));
    }
    block.append(el("pre", { text: rule.lines.join("\n") }),
      el("p", { class: "note", text: "g = grad_out: dL/d(this op's output), as it arrived" }));
    return block;
  }

  // ------------------------------------------------------------------ the backward stepper
  const reached = function (id) {
    if (state.step < 0) return false;
    return data.backward.slice(0, state.step + 1).some(function (s) { return s.node === id; }) ||
      (!nodes.get(id).op && state.step >= data.backward.length - 1);
  };

  const controls = el("div", { class: "backward-controls" },
    el("strong", { text: "Backward " }),
    el("button", { id: "bw-reset", text: "⟲ reset", onclick: function () { goTo(-1); } }),
    el("button", { id: "bw-prev", text: "◀ back", onclick: function () { goTo(state.step - 1); } }),
    el("button", { id: "bw-step", text: "step ▶", onclick: function () { goTo(state.step + 1); } }),
    el("button", { id: "bw-play", text: "play", onclick: function () { play(!state.timer); } }),
    el("button", { id: "bw-end", text: "to the input", onclick: function () { goTo(data.backward.length - 1); } }),
    el("span", { id: "bw-status", text: "not started: the forward values are shown (→ steps)" }));
  const arrivals = el("div", { id: "bw-arrivals" });
  graphPanel.prepend(controls, arrivals);

  /** Step on its own, one op every 0.6 s, until the input or until paused. */
  function play(on) {
    clearInterval(state.timer);
    if (on && state.step >= data.backward.length - 1) goTo(-1); // from the top again
    state.timer = on ? setInterval(function () {
      goTo(state.step + 1);
      if (state.step >= data.backward.length - 1) play(false);
    }, 600) : null;
    document.getElementById("bw-play").textContent = on ? "pause" : "play";
  }

  function goTo(step) {
    state.step = Math.max(-1, Math.min(step, data.backward.length - 1));
    const status = document.getElementById("bw-status");
    arrivals.textContent = "";
    if (state.step < 0) {
      status.textContent = "not started: the forward values are shown (→ steps)";
      drawGraph(state.module);
      return;
    }
    const s = data.backward[state.step];
    const node = nodes.get(s.node);
    const last = state.step === data.backward.length - 1;
    status.textContent = "step " + (state.step + 1) + " of " + data.backward.length + ": " +
      (node.op ? node.op + " (" + s.node + (node.scope.length ? ", " + node.scope[node.scope.length - 1] : "") + ")"
        : node.name + " (" + node.kind + ")") +
      (node.op ? "" : ": the gradient has reached the input") + (last ? " (done)" : "");
    status.dataset.node = s.node;
    status.dataset.kind = node.op ? "op" : node.kind;
    arrivals.append(el("p", {}, "gradient arriving at ", el("strong", { text: label(node) }),
      ": |dL/d(value)| = " + fmt(s.grad_norm)));
    if (s.sends.length) {
      const list = el("ul", {});
      s.sends.forEach(function (send) {
        const to = nodes.get(send.to);
        const sum = send.of > 1 ? " — sum building up: " + send.arrived + " of " + send.of +
          " contributions arrived, |sum so far| = " + fmt(send.sum_norm) : "";
        list.append(el("li", { class: send.of > 1 ? "sum" : "", text: "→ input " + send.input + " " +
          (to.op ? to.op + " " + send.to : to.kind + " " + to.name) + ": |contribution| = " +
          fmt(send.norm) + sum }));
      });
      arrivals.append(list);
    }
    const want = parentToShow(node);
    if (state.module !== want) openModule(want); else drawGraph(want);
    select(s.node);
  }

  function paint() {
    const current = state.step >= 0 ? data.backward[state.step].node : null;
    const currentKey = current && state.keyOf.get(current);
    const received = new Set();
    data.backward.slice(0, state.step + 1).forEach(function (s) {
      const key = state.keyOf.get(s.node);
      if (key) received.add(key);
    });
    const selectedKey = state.selected && state.keyOf.get(state.selected);
    graphBox.querySelectorAll("g.node").forEach(function (g) {
      g.classList.toggle("current", g.dataset.key === currentKey);
      g.classList.toggle("has-grad", received.has(g.dataset.key));
      g.classList.toggle("selected", g.dataset.key === selectedKey);
    });
  }

  document.addEventListener("keydown", function (event) { // arrows step, as the buttons do
    if (event.target.closest && event.target.closest("input, textarea, select")) return;
    if (event.key === "ArrowRight") goTo(state.step + 1);
    else if (event.key === "ArrowLeft") goTo(state.step - 1);
  });

  api.openModule = openModule;
  api.select = select;
  api.goTo = goTo;
  openModule("");
})();
