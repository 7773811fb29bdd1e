// The training curve: train and validation NLL per epoch as an SVG line chart that grows as
// epochs arrive.

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const H = 300;
const PAD = { left: 62, right: 16, top: 34, bottom: 40 };

function el(name, attrs = {}, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

/// About five round tick values covering [lo, hi].
function ticks(lo, hi, n = 5) {
  const span = hi - lo || Math.abs(hi) || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

export class Chart {
  constructor(container, title) {
    this.points = [];
    this.svg = el("svg", {
      viewBox: `0 0 ${W} ${H}`,
      class: "chart",
      role: "img",
      "aria-label": title,
    });
    el("title", {}, this.svg).textContent = title;
    this.grid = el("g", { class: "grid" }, this.svg);
    this.train = el("polyline", { class: "line train", points: "" }, this.svg);
    this.val = el("polyline", { class: "line val", points: "" }, this.svg);
    this.best = el("circle", { class: "best", r: 4, cx: -10, cy: -10 }, this.svg);
    const legend = el("g", { class: "legend" }, this.svg);
    [["train", "training NLL"], ["val", "validation NLL"]].forEach(([cls, text], i) => {
      const x = PAD.left + 10 + i * 150;
      el("line", { class: `line ${cls}`, x1: x, x2: x + 24, y1: 14, y2: 14 }, legend);
      el("text", { x: x + 30, y: 18 }, legend).textContent = text;
    });
    container.replaceChildren(this.svg);
  }

  /// Adds an epoch: {epoch, train_nll, val_nll, best_epoch}.
  add(p) {
    this.points = this.points.filter((q) => q.epoch < p.epoch);
    this.points.push(p);
    this.draw();
  }

  draw() {
    const pts = this.points;
    if (!pts.length) return;
    const ys = pts.flatMap((p) => [p.train_nll, p.val_nll]).filter((v) => Number.isFinite(v));
    // The first epochs are often far above the rest: the range follows the last 90%.
    const late = pts.slice(Math.floor(pts.length / 10)).flatMap((p) => [p.train_nll, p.val_nll]).filter(Number.isFinite);
    let lo = Math.min(...ys);
    let hi = Math.max(...(late.length ? late : ys));
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const x0 = 1;
    const x1 = Math.max(2, pts[pts.length - 1].epoch);
    const sx = (e) => PAD.left + ((e - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
    const sy = (v) => PAD.top + (1 - (Math.min(v, hi) - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);
    this.grid.replaceChildren();
    for (const v of ticks(lo, hi)) {
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(v), y2: sy(v) }, this.grid);
      el("text", { x: PAD.left - 6, y: sy(v) + 4, "text-anchor": "end" }, this.grid).textContent = v;
    }
    for (const e of ticks(x0, x1).filter((e) => Number.isInteger(e))) {
      el("text", { x: sx(e), y: H - PAD.bottom + 16, "text-anchor": "middle" }, this.grid).textContent = e;
    }
    el("text", { x: (PAD.left + W - PAD.right) / 2, y: H - 6, "text-anchor": "middle" }, this.grid).textContent = "epoch";
    const line = (key) =>
      pts.filter((p) => Number.isFinite(p[key])).map((p) => `${sx(p.epoch).toFixed(1)},${sy(p[key]).toFixed(1)}`).join(" ");
    this.train.setAttribute("points", line("train_nll"));
    this.val.setAttribute("points", line("val_nll"));
    const last = pts[pts.length - 1];
    const best = pts.find((p) => p.epoch === last.best_epoch);
    if (best && Number.isFinite(best.val_nll)) {
      this.best.setAttribute("cx", sx(best.epoch));
      this.best.setAttribute("cy", sy(best.val_nll));
    }
    this.svg.dataset.points = String(pts.length);
  }
}
