// The connection's timeline on a canvas: messages per bucket (client above the axis, server below),
// pings and pongs, keep-alive silences over the limit, violations, open and close. Drag to zoom
// (the frame list follows), double-click to zoom out, click a violation mark to open its frame.

const COLORS = { c2s: "#3b6fb6", s2c: "#3a8f5c", pings: "#888", silence: "rgba(214,69,65,0.16)",
                 error: "#c0392b", warning: "#d68910", info: "#7f8c8d", close: "#555" };

export class Timeline {
  constructor(canvas, { onRange, onFrame }) {
    this.canvas = canvas;
    this.onRange = onRange;
    this.onFrame = onFrame;
    this.data = null;
    this.drag = null;
    canvas.addEventListener("mousedown", (e) => { this.drag = { x0: e.offsetX, x1: e.offsetX }; });
    canvas.addEventListener("mousemove", (e) => { if (this.drag) { this.drag.x1 = e.offsetX; this.draw(); } });
    canvas.addEventListener("mouseup", (e) => this.release(e));
    canvas.addEventListener("dblclick", () => this.onRange(null, null));
  }

  show(data) { this.data = data; this.draw(); }

  x(t) { const d = this.data; return ((t - d.t0) / (d.t1 - d.t0)) * this.canvas.width; }
  t(x) { const d = this.data; return d.t0 + (x / this.canvas.width) * (d.t1 - d.t0); }

  release(e) {
    const drag = this.drag;
    this.drag = null;
    if (!drag || !this.data) return;
    if (Math.abs(drag.x1 - drag.x0) > 4) {
      const [a, b] = [drag.x0, drag.x1].sort((p, q) => p - q);
      this.onRange(this.t(a), this.t(b));
      return;
    }
    const hit = this.data.violations.find((v) => Math.abs(this.x(v.t) - e.offsetX) < 5 && v.g !== null);
    if (hit) this.onFrame(hit.g);
    this.draw();
  }

  draw() {
    const c = this.canvas, ctx = c.getContext("2d");
    c.width = c.clientWidth;
    ctx.clearRect(0, 0, c.width, c.height);
    const d = this.data;
    if (!d) return;
    const mid = 62, half = 44, w = c.width / d.buckets;
    for (const s of d.silences) {
      ctx.fillStyle = COLORS.silence;
      ctx.fillRect(this.x(s.start), 0, Math.max(2, this.x(s.end) - this.x(s.start)), c.height);
    }
    const peak = Math.max(1, ...d.series.c2s, ...d.series.s2c);
    d.series.c2s.forEach((n, i) => { ctx.fillStyle = COLORS.c2s; const h = (n / peak) * half; ctx.fillRect(i * w, mid - h, Math.max(1, w - 0.5), h); });
    d.series.s2c.forEach((n, i) => { ctx.fillStyle = COLORS.s2c; const h = (n / peak) * half; ctx.fillRect(i * w, mid, Math.max(1, w - 0.5), h); });
    ctx.fillStyle = COLORS.pings;
    d.series.pings.forEach((n, i) => { if (n) ctx.fillRect(i * w, c.height - 8, Math.max(1, w - 0.5), 6); });
    ctx.strokeStyle = "#bbb"; ctx.beginPath(); ctx.moveTo(0, mid); ctx.lineTo(c.width, mid); ctx.stroke();
    for (const v of d.violations) {
      const x = this.x(v.t);
      ctx.fillStyle = COLORS[v.severity];
      ctx.beginPath(); ctx.moveTo(x - 5, 0); ctx.lineTo(x + 5, 0); ctx.lineTo(x, 9); ctx.fill();
    }
    for (const [t, label] of [[d.open, "open"], [d.close, "close"]]) {
      if (t === null || t < d.t0 || t > d.t1) continue;
      ctx.strokeStyle = COLORS.close; ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(this.x(t), 0); ctx.lineTo(this.x(t), c.height); ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = COLORS.close; ctx.font = "10px sans-serif";
      ctx.fillText(label, Math.min(this.x(t) + 3, c.width - 30), mid - 30);
    }
    ctx.fillStyle = "#444"; ctx.font = "10px sans-serif";
    ctx.fillText(new Date(d.t0 * 1000).toISOString().slice(11, 23), 2, c.height - 12);
    const end = new Date(d.t1 * 1000).toISOString().slice(11, 23);
    ctx.fillText(end, c.width - ctx.measureText(end).width - 2, c.height - 12);
    ctx.fillText("client →", c.width - 48, mid - 4); ctx.fillText("← server", c.width - 48, mid + 12);
    if (this.drag) {
      ctx.fillStyle = "rgba(59,111,182,0.2)";
      ctx.fillRect(Math.min(this.drag.x0, this.drag.x1), 0, Math.abs(this.drag.x1 - this.drag.x0), c.height);
    }
  }
}
