/* l3dg offline ball-and-stick viewer: plain canvas 2D, no libraries, nothing fetched.
 *
 * Molecules come from <script type="application/json" id="l3dg-molecules">:
 *   {"<id>": {"z": [Z...], "p": [x0,y0,z0, x1,...] (Å), "b": [i,j,order, ...]}, ...}
 * Every canvas element with a data-mol attribute (an id above) gets a viewer: drag (or the
 * arrow keys) to rotate, double-click to reset, auto-rotation while idle (off with
 * prefers-reduced-motion or the checkbox).
 * Atoms: CPK (Jmol) colours, sizes from covalent radii (Cordero 2008); depth-sorted
 * painter's algorithm with a mild perspective. Bond orders 2 and 3 drawn as parallel lines.
 */
(function () {
  "use strict";
  var CPK = {1: "#ffffff", 5: "#ffb5b5", 6: "#909090", 7: "#3050f8", 8: "#ff0d0d", 9: "#90e050",
    14: "#f0c8a0", 15: "#ff8000", 16: "#ffff30", 17: "#1ff01f", 35: "#a62929", 53: "#940094"};
  var RADIUS = {1: 0.31, 5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 14: 1.11, 15: 1.07,
    16: 1.05, 17: 1.02, 35: 1.20, 53: 1.39};
  var OTHER_COLOUR = "#ff1493", OTHER_RADIUS = 0.8;
  var BALL = 0.55, STICK = 0.14, SPIN = 0.6;  /* ball = BALL x covalent radius; rad/s */
  var options = {spin: !(window.matchMedia && matchMedia("(prefers-reduced-motion: reduce)").matches),
    hydrogens: true};
  var viewers = [];

  function shade(hex, f) {  /* f < 1 darker, f > 1 lighter */
    var n = parseInt(hex.slice(1), 16), c = [(n >> 16) & 255, (n >> 8) & 255, n & 255];
    return "rgb(" + c.map(function (v) {
      return Math.max(0, Math.min(255, Math.round(f > 1 ? v + (255 - v) * (f - 1) : v * f)));
    }).join(",") + ")";
  }
  function mul(a, b) {  /* 3x3 row-major */
    var r = new Array(9);
    for (var i = 0; i < 3; i++) for (var j = 0; j < 3; j++)
      r[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
    return r;
  }
  function rotY(t) { var c = Math.cos(t), s = Math.sin(t); return [c, 0, s, 0, 1, 0, -s, 0, c]; }
  function rotX(t) { var c = Math.cos(t), s = Math.sin(t); return [1, 0, 0, 0, c, -s, 0, s, c]; }

  function Viewer(canvas, mol) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.z = mol.z; this.n = mol.z.length;
    var c = [0, 0, 0], k;
    for (k = 0; k < this.n; k++) { c[0] += mol.p[3 * k]; c[1] += mol.p[3 * k + 1]; c[2] += mol.p[3 * k + 2]; }
    if (this.n) c = c.map(function (v) { return v / this.n; }, this);
    this.p = new Float64Array(3 * this.n);
    var reach = 0.5;
    for (k = 0; k < this.n; k++) {
      var d2 = 0;
      for (var a = 0; a < 3; a++) { this.p[3 * k + a] = mol.p[3 * k + a] - c[a]; d2 += this.p[3 * k + a] * this.p[3 * k + a]; }
      reach = Math.max(reach, Math.sqrt(d2) + BALL * (RADIUS[this.z[k]] || OTHER_RADIUS));
    }
    this.reach = reach;
    this.b = mol.b || [];
    this.R = mul(rotX(-0.35), rotY(0.5));
    this.idleSince = 0; this.dragging = false; this.visible = true;
    this.bind();
  }
  Viewer.prototype.bind = function () {
    var self = this, cv = this.canvas, last = null;
    cv.addEventListener("pointerdown", function (e) {
      self.dragging = true; last = [e.clientX, e.clientY];
      if (cv.setPointerCapture) cv.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    cv.addEventListener("pointermove", function (e) {
      if (!self.dragging) return;
      self.turn((e.clientX - last[0]) * 0.01, (e.clientY - last[1]) * 0.01);
      last = [e.clientX, e.clientY];
    });
    function release() { self.dragging = false; self.idleSince = performance.now(); }
    cv.addEventListener("pointerup", release);
    cv.addEventListener("pointercancel", release);
    cv.addEventListener("dblclick", function () { self.R = mul(rotX(-0.35), rotY(0.5)); self.draw(); });
    cv.addEventListener("keydown", function (e) {
      var step = {ArrowLeft: [-0.2, 0], ArrowRight: [0.2, 0], ArrowUp: [0, -0.2], ArrowDown: [0, 0.2]}[e.key];
      if (step) { self.turn(step[0], step[1]); self.idleSince = performance.now(); e.preventDefault(); }
    });
  };
  Viewer.prototype.turn = function (dx, dy) {
    this.R = mul(rotX(dy), mul(rotY(dx), this.R));
    this.draw();
  };
  Viewer.prototype.fit = function () {  /* canvas pixels follow its CSS size and the DPR */
    var cv = this.canvas, dpr = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(cv.clientWidth * dpr)), h = Math.max(1, Math.round(cv.clientHeight * dpr));
    if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
    return dpr;
  };
  Viewer.prototype.draw = function () {
    var dpr = this.fit(), cv = this.canvas, ctx = this.ctx, W = cv.width, H = cv.height;
    ctx.clearRect(0, 0, W, H);
    if (!this.n) return;
    var R = this.R, s0 = 0.5 * Math.min(W, H) / (this.reach * 1.12), D = 5 * this.reach;
    var sx = new Float64Array(this.n), sy = new Float64Array(this.n), sz = new Float64Array(this.n),
      sc = new Float64Array(this.n), shown = new Uint8Array(this.n), items = [], k;
    for (k = 0; k < this.n; k++) {
      var x = this.p[3 * k], y = this.p[3 * k + 1], z = this.p[3 * k + 2];
      var X = R[0] * x + R[1] * y + R[2] * z, Y = R[3] * x + R[4] * y + R[5] * z, Z = R[6] * x + R[7] * y + R[8] * z;
      var f = s0 * D / (D - Z);
      sx[k] = W / 2 + X * f; sy[k] = H / 2 - Y * f; sz[k] = Z; sc[k] = f;
      shown[k] = options.hydrogens || this.z[k] !== 1 ? 1 : 0;
      if (shown[k]) items.push([Z, 0, k]);
    }
    for (var e = 0; e + 2 < this.b.length; e += 3) {
      var i = this.b[e], j = this.b[e + 1];
      if (shown[i] && shown[j]) items.push([(sz[i] + sz[j]) / 2 - 0.01, 1, e]);
    }
    items.sort(function (a, b) { return a[0] - b[0]; });
    ctx.lineCap = "round";
    for (var t = 0; t < items.length; t++) {
      if (items[t][1] === 1) this.bond(items[t][2], sx, sy, sc, dpr);
      else this.atom(items[t][2], sx, sy, sc, dpr);
    }
  };
  Viewer.prototype.bond = function (e, sx, sy, sc, dpr) {
    var ctx = this.ctx, i = this.b[e], j = this.b[e + 1], order = Math.max(1, Math.min(3, this.b[e + 2] | 0));
    var dx = sx[j] - sx[i], dy = sy[j] - sy[i], len = Math.sqrt(dx * dx + dy * dy) || 1;
    var f = (sc[i] + sc[j]) / 2, width = Math.max(1.2 * dpr, STICK * f * (order > 1 ? 0.6 : 1));
    var nx = -dy / len, ny = dx / len, gap = order > 1 ? Math.max(2 * dpr, 0.11 * f) : 0;
    var mx = (sx[i] + sx[j]) / 2, my = (sy[i] + sy[j]) / 2;
    ctx.lineWidth = width;
    for (var o = 0; o < order; o++) {
      var off = (o - (order - 1) / 2) * gap, ox = nx * off, oy = ny * off;
      ctx.strokeStyle = shade(CPK[this.z[i]] || OTHER_COLOUR, 0.8);
      ctx.beginPath(); ctx.moveTo(sx[i] + ox, sy[i] + oy); ctx.lineTo(mx + ox, my + oy); ctx.stroke();
      ctx.strokeStyle = shade(CPK[this.z[j]] || OTHER_COLOUR, 0.8);
      ctx.beginPath(); ctx.moveTo(mx + ox, my + oy); ctx.lineTo(sx[j] + ox, sy[j] + oy); ctx.stroke();
    }
  };
  Viewer.prototype.atom = function (k, sx, sy, sc, dpr) {
    var ctx = this.ctx, colour = CPK[this.z[k]] || OTHER_COLOUR;
    var r = Math.max(3.2 * dpr, BALL * (RADIUS[this.z[k]] || OTHER_RADIUS) * sc[k]);
    var g = ctx.createRadialGradient(sx[k] - r / 3, sy[k] - r / 3, r / 8, sx[k], sy[k], r);
    g.addColorStop(0, shade(colour, 1.6)); g.addColorStop(0.55, colour); g.addColorStop(1, shade(colour, 0.55));
    ctx.fillStyle = g;
    ctx.beginPath(); ctx.arc(sx[k], sy[k], r, 0, 2 * Math.PI); ctx.fill();
    ctx.lineWidth = Math.max(0.6, 0.6 * dpr); ctx.strokeStyle = "rgba(0,0,0,0.35)"; ctx.stroke();
  };

  function frame(prev) {
    return function (now) {
      var dt = Math.min(0.1, (now - prev) / 1000);
      if (options.spin) for (var v = 0; v < viewers.length; v++) {
        var w = viewers[v];
        if (w.visible && !w.dragging && now - w.idleSince > 2500) { w.R = mul(rotY(SPIN * dt), w.R); w.draw(); }
      }
      requestAnimationFrame(frame(now));
    };
  }

  function init() {
    var node = document.getElementById("l3dg-molecules");
    var data = node ? JSON.parse(node.textContent) : {};
    var canvases = document.querySelectorAll("canvas[data-mol]");
    for (var c = 0; c < canvases.length; c++) {
      var mol = data[canvases[c].getAttribute("data-mol")];
      if (!mol) throw new Error("no molecule data for canvas " + canvases[c].getAttribute("data-mol"));
      var v = new Viewer(canvases[c], mol);
      v.draw();
      viewers.push(v);
    }
    if ("IntersectionObserver" in window) {
      var io = new IntersectionObserver(function (entries) {
        entries.forEach(function (en) { en.target.l3dgViewer.visible = en.isIntersecting; });
      });
      viewers.forEach(function (v) { v.canvas.l3dgViewer = v; io.observe(v.canvas); });
    }
    var spin = document.getElementById("l3dg-spin"), hyd = document.getElementById("l3dg-hydrogens");
    if (spin) { spin.checked = options.spin; spin.addEventListener("change", function () { options.spin = spin.checked; }); }
    if (hyd) hyd.addEventListener("change", function () {
      options.hydrogens = hyd.checked; viewers.forEach(function (v) { v.draw(); });
    });
    window.addEventListener("resize", function () { viewers.forEach(function (v) { v.draw(); }); });
    requestAnimationFrame(frame(performance.now()));
    document.documentElement.setAttribute("data-l3dg-viewers", String(viewers.length));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
