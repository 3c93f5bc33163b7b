/* The search-tree viewer of ttsearch: draws one tree snapshot as SVG. Plain JavaScript, no
 * build step, no dependencies; used by `ttsearch serve`'s live search view (GET /) and by the
 * experiment report's tree pages, which inline this file.
 *
 *   TreeView.render(container, tree)
 *
 * `tree`: {nodes: [{id, parent, depth, text, tokens, steps, score, state, finish}], and
 * optionally problem, status, answer, selected (the node id of the selected candidate)},
 * the nodes a parent before its children (`SearchTree.snapshot()`).
 *
 * Layout: depth from left to right, one row per leaf in depth-first order, a parent halfway
 * between its first and last child. A node's fill is its last step's PRM score (red 0 to
 * green 1; grey without a score); its ring is its state (open: dashed blue, expanded: thin,
 * pruned: faded, finished: thick black); the selected candidate and its path are blue.
 * Hover a node for its step text; click it to read the solution up to it below the tree.
 */
(function (global) {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const COLUMN = 56; // px between depths
  const ROW = 15; // px between leaves
  const MARGIN = 12;
  const RADIUS = { node: 5, selected: 7 };
  const STATES = ["open", "expanded", "pruned", "finished"];
  const TOOLTIP_CHARS = 600;

  function scoreColour(score) {
    if (typeof score !== "number" || !Number.isFinite(score)) return "#c4c4c4";
    const clamped = Math.min(1, Math.max(0, score));
    return `hsl(${Math.round(120 * clamped)}, 70%, 45%)`;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgElement(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    return node;
  }

  /* Nodes by id and children by parent id; throws on a node whose parent is not listed
   * before it (the snapshot's order), so a broken snapshot says so instead of drawing half. */
  function index(nodes) {
    const byId = new Map();
    const children = new Map();
    let root = null;
    for (const node of nodes) {
      if (byId.has(node.id)) throw new Error(`node ${node.id} is listed twice`);
      byId.set(node.id, node);
      children.set(node.id, []);
      if (node.parent === null || node.parent === undefined) {
        if (root !== null) throw new Error(`nodes ${root.id} and ${node.id} both have no parent`);
        root = node;
      } else if (children.has(node.parent)) {
        children.get(node.parent).push(node);
      } else {
        throw new Error(`node ${node.id}: its parent ${node.parent} is not listed before it`);
      }
    }
    if (root === null) throw new Error("the tree has no root (a node without a parent)");
    return { byId, children, root };
  }

  /* Row (y, in leaf units) of every node; iterative, as a deep tree would overflow recursion. */
  function layout(root, children) {
    const rowOf = new Map();
    let leaves = 0;
    const stack = [[root, false]];
    while (stack.length) {
      const [node, visited] = stack.pop();
      const kids = children.get(node.id);
      if (!kids.length) {
        rowOf.set(node.id, leaves++);
      } else if (visited) {
        rowOf.set(node.id, (rowOf.get(kids[0].id) + rowOf.get(kids[kids.length - 1].id)) / 2);
      } else {
        stack.push([node, true]);
        for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], false]);
      }
    }
    return { rowOf, leaves };
  }

  /* Ids from the root down to `id` (empty when `id` is not a node). */
  function pathTo(id, byId) {
    const path = [];
    let node = byId.get(id);
    while (node) {
      path.unshift(node.id);
      node = node.parent === null || node.parent === undefined ? null : byId.get(node.parent);
    }
    return path;
  }

  function describeScore(score) {
    return typeof score === "number" ? score.toFixed(3) : "none";
  }

  function tooltip(node) {
    const finish = node.finish ? ` (${node.finish})` : "";
    const head = `node ${node.id} · depth ${node.depth} · ${node.state}${finish} · score ${describeScore(node.score)}`;
    const text = node.text || (node.parent === null ? "(the problem)" : "(no text)");
    const clipped = text.length > TOOLTIP_CHARS ? `${text.slice(0, TOOLTIP_CHARS)}…` : text;
    return `${head}\n\n${clipped}`;
  }

  function summary(tree, nodes) {
    const counts = Object.fromEntries(STATES.map((state) => [state, 0]));
    for (const node of nodes) counts[node.state] = (counts[node.state] || 0) + 1;
    const parts = [`${nodes.length} node${nodes.length === 1 ? "" : "s"}`];
    for (const state of STATES) parts.push(`${counts[state]} ${state}`);
    if (tree.answer !== undefined && tree.answer !== null) parts.push(`answer ${tree.answer}`);
    return parts.join(" · ");
  }

  function legend() {
    const box = element("div", "tv-legend");
    const gradient = element("span", "tv-key");
    gradient.append("PRM score 0 ", element("span", "tv-gradient"), " 1");
    const none = element("span", "tv-key");
    const grey = svgElement("svg", { width: 12, height: 12 });
    grey.append(svgElement("circle", { cx: 6, cy: 6, r: 4.5, fill: scoreColour(null), class: "tv-swatch" }));
    none.append(grey, " no score");
    box.append(gradient, none);
    for (const state of [...STATES, "selected"]) {
      const key = element("span", "tv-key");
      const swatch = svgElement("svg", { width: 14, height: 14 });
      swatch.append(svgElement("circle", { cx: 7, cy: 7, r: 4.5, fill: "#fff", class: `tv-swatch tv-${state}` }));
      key.append(swatch, ` ${state === "selected" ? "selected candidate" : state}`);
      box.append(key);
    }
    return box;
  }

  /* The solution up to `id`, one segment per line group, each with its score. */
  function details(box, id, byId, selected) {
    box.replaceChildren();
    const path = pathTo(id, byId);
    if (!path.length) return;
    const node = byId.get(id);
    const title = id === selected ? "the selected candidate" : `the solution up to node ${id}`;
    box.append(element("div", "tv-details-title", `${title} (${node.state}, score ${describeScore(node.score)})`));
    const text = element("pre", "tv-solution");
    for (const step of path.slice(1)) {
      const segment = byId.get(step);
      const span = element("span", "tv-segment", segment.text);
      span.style.borderLeftColor = scoreColour(segment.score);
      span.title = `node ${segment.id} · score ${describeScore(segment.score)}`;
      text.append(span);
    }
    box.append(text);
  }

  function render(container, tree) {
    const nodes = tree && Array.isArray(tree.nodes) ? tree.nodes : [];
    // What the reader had chosen before this redraw (a live tree redraws every update): the
    // node clicked, and where the tree was scrolled to.
    const focus = container.tvFocus;
    const previous = container.querySelector(".tv-scroll");
    const scrolled = previous ? [previous.scrollLeft, previous.scrollTop] : [0, 0];
    container.replaceChildren();
    container.classList.add("tv");
    container.append(element("div", "tv-summary", summary(tree || {}, nodes)), legend());
    if (!nodes.length) {
      const waiting = tree && tree.status === "queued" ? "waiting for a search slot…" : "no nodes yet";
      container.append(element("div", "tv-empty", waiting));
      return;
    }
    const { byId, children, root } = index(nodes);
    const { rowOf, leaves } = layout(root, children);
    const selected = tree.selected === undefined ? null : tree.selected;
    const onPath = new Set(pathTo(selected, byId));
    let deepest = 0;
    for (const node of nodes) deepest = Math.max(deepest, node.depth);
    const width = 2 * MARGIN + deepest * COLUMN;
    const height = 2 * MARGIN + Math.max(0, leaves - 1) * ROW;
    const svg = svgElement("svg", { class: "tv-tree", width, height, viewBox: `0 0 ${width} ${height}` });
    const edges = svgElement("g", { class: "tv-edges" });
    const dots = svgElement("g", { class: "tv-nodes" });
    const x = (node) => MARGIN + node.depth * COLUMN;
    const y = (node) => MARGIN + rowOf.get(node.id) * ROW;
    const box = element("div", "tv-details");
    for (const node of nodes) {
      const marks = [];
      if (onPath.has(node.id)) marks.push("tv-path");
      if (node.id === selected) marks.push("tv-selected");
      if (node.parent !== null && node.parent !== undefined) {
        const parent = byId.get(node.parent);
        const middle = (x(parent) + x(node)) / 2;
        const d = `M${x(parent)},${y(parent)} C${middle},${y(parent)} ${middle},${y(node)} ${x(node)},${y(node)}`;
        const edgeClass = ["tv-edge", node.state === "pruned" ? "tv-pruned" : "", ...marks].join(" ").trim();
        edges.append(svgElement("path", { d, class: edgeClass }));
      }
      const circle = svgElement("circle", {
        cx: x(node),
        cy: y(node),
        r: node.id === selected ? RADIUS.selected : RADIUS.node,
        fill: scoreColour(node.score),
        class: ["tv-node", `tv-${node.state}`, ...marks].join(" "),
        "data-id": node.id,
        "data-state": node.state,
      });
      const title = svgElementWithText("title", tooltip(node));
      circle.append(title);
      circle.addEventListener("click", () => {
        container.tvFocus = node.id;
        details(box, node.id, byId, selected);
      });
      dots.append(circle);
    }
    svg.append(edges, dots);
    const scroll = element("div", "tv-scroll");
    scroll.append(svg);
    container.append(scroll, box);
    [scroll.scrollLeft, scroll.scrollTop] = scrolled;
    const shown = byId.has(focus) ? focus : selected;
    if (shown !== null && byId.has(shown)) details(box, shown, byId, selected);
  }

  function svgElementWithText(tag, text) {
    const node = svgElement(tag);
    node.textContent = text;
    return node;
  }

  global.TreeView = { render, scoreColour, pathTo };
})(window);
