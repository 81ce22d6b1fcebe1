// KVRaft trace viewer: filters, tooltips, zoom and the minimap over the
// static SVG that the page already contains. Filtering rewrites one CSS
// rule (every element carries its host class hN and tag class tN), so it
// costs the same for 10 or 100,000 events.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("trace-data").textContent);
  const svg = document.getElementById("spacetime");
  const box = document.getElementById("diagram");
  const heads = document.getElementById("lane-heads");
  const tip = document.getElementById("tooltip");
  const details = document.getElementById("details");
  const filterStyle = document.getElementById("filter-style");
  const mm = document.getElementById("minimap");
  const W = D.width;
  const hiddenHosts = new Set(), hiddenTags = new Set();
  const color = (t) => "hsl(" + ((t * 137.508) % 360).toFixed(1) + ",65%,45%)";
  let zoom = 1;

  function applyFilters() {
    const sel = [];
    hiddenHosts.forEach((h) => sel.push(".h" + h));
    hiddenTags.forEach((t) => sel.push(".t" + t));
    filterStyle.textContent = sel.length ? sel.join(",") + "{display:none}" : "";
    renderDots();
    drawMinimap();
  }
  function bind(selector, set, key) {
    document.querySelectorAll(selector).forEach((cb) => {
      cb.addEventListener("change", () => {
        const v = cb.dataset[key];
        if (cb.checked) set.delete(v); else set.add(v);
        applyFilters();
      });
    });
  }
  bind("input.host-filter", hiddenHosts, "h");
  bind("input.tag-filter", hiddenTags, "t");
  function setAll(selector, set, key, on) {
    document.querySelectorAll(selector).forEach((cb) => {
      cb.checked = on;
      if (on) set.delete(cb.dataset[key]); else set.add(cb.dataset[key]);
    });
    applyFilters();
  }
  document.getElementById("tags-all").onclick = () => setAll("input.tag-filter", hiddenTags, "t", true);
  document.getElementById("tags-none").onclick = () => setAll("input.tag-filter", hiddenTags, "t", false);

  // Tooltip: the event's host, trace, tag, clock and body.
  function describe(i) {
    const e = D.ev[i];
    return D.hosts[e[0]] + "  line " + e[6] + "\ntrace " + e[3] + "\n" + D.tags[e[2]] +
      "\n" + e[4] + "\n" + e[5];
  }
  function eventIndex(target) {
    return target && target.classList && target.classList.contains("event") ? +target.id.slice(1) : -1;
  }
  svg.addEventListener("mouseover", (ev) => {
    const i = eventIndex(ev.target);
    if (i < 0) return;
    tip.textContent = describe(i);
    tip.style.display = "block";
  });
  svg.addEventListener("mousemove", (ev) => {
    if (tip.style.display !== "block") return;
    const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 4);
    const y = Math.min(ev.clientY + 14, window.innerHeight - tip.offsetHeight - 4);
    tip.style.left = Math.max(0, x) + "px";
    tip.style.top = Math.max(0, y) + "px";
  });
  svg.addEventListener("mouseout", (ev) => {
    if (eventIndex(ev.target) >= 0) tip.style.display = "none";
  });
  // Click: pin the details and outline every event of the same trace.
  let selected = [];
  svg.addEventListener("click", (ev) => {
    const i = eventIndex(ev.target);
    selected.forEach((el) => el.classList.remove("sel"));
    selected = [];
    if (i < 0) { details.textContent = ""; return; }
    details.textContent = describe(i);
    const trace = D.ev[i][3];
    D.ev.forEach((e, j) => {
      if (e[3] === trace) {
        const el = document.getElementById("e" + j);
        if (el) { el.classList.add("sel"); selected.push(el); }
      }
    });
  });

  // Zoom is vertical: it changes the row spacing and re-places events and
  // arrows, so lanes keep their width and circles stay round. "fit" shows
  // every row at once.
  const G = D.geom;
  const circles = Array.from(svg.querySelectorAll("circle.event"));
  const lanes = Array.from(svg.querySelectorAll("line.lane"));
  const arrows = Array.from(svg.querySelectorAll("line.arrow")).map((el) => ({
    el: el, from: +el.dataset.from.slice(1), to: +el.dataset.to.slice(1),
  }));
  let height = D.height;
  function setZoom(z, keepCentre) {
    const centre = (box.scrollTop + box.clientHeight / 2) / height;
    zoom = Math.max(0.001, Math.min(8, z));
    const rowH = G.rowH * zoom;
    const r = Math.max(1.5, Math.min(G.r, rowH * 0.3));
    const y = (row) => G.top + row * rowH;
    const x = (lane) => G.left + lane * G.laneW;
    height = Math.ceil(2 * G.top + rowH * Math.max(1, D.rows));
    svg.classList.toggle("dense", r < 3);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + W + " " + height);
    lanes.forEach((el) => el.setAttribute("y2", height));
    circles.forEach((el, i) => {
      el.setAttribute("cy", y(D.ev[i][1]).toFixed(1));
      el.setAttribute("r", r.toFixed(1));
    });
    arrows.forEach((a) => {
      const f = D.ev[a.from], t = D.ev[a.to];
      const x1 = x(f[0]), y1 = y(f[1]), x2 = x(t[0]), y2 = y(t[1]);
      const len = Math.max(1, Math.hypot(x2 - x1, y2 - y1));
      const k = Math.max(0, len - r - 1) / len;
      a.el.setAttribute("y1", y1.toFixed(1));
      a.el.setAttribute("x2", (x1 + (x2 - x1) * k).toFixed(1));
      a.el.setAttribute("y2", (y1 + (y2 - y1) * k).toFixed(1));
    });
    if (keepCentre) box.scrollTop = centre * height - box.clientHeight / 2;
    document.getElementById("zoom-level").textContent =
      (zoom >= 0.1 ? Math.round(zoom * 100) : (zoom * 100).toFixed(1)) + "%";
    drawMinimap();
  }
  document.getElementById("zoom-in").onclick = () => setZoom(zoom * 1.5, true);
  document.getElementById("zoom-out").onclick = () => setZoom(zoom / 1.5, true);
  document.getElementById("zoom-reset").onclick = () => setZoom(1, true);
  document.getElementById("zoom-fit").onclick = () => {
    const room = box.clientHeight - heads.offsetHeight - 2 * G.top;
    setZoom(Math.min(1, room / (G.rowH * Math.max(1, D.rows))), false);
  };

  // Minimap: every visible event as a dot, the viewport as a frame. Dots
  // are drawn once per filter change into an offscreen canvas; scrolling
  // only blits it.
  const dots = document.createElement("canvas");
  function renderDots() {
    const r = window.devicePixelRatio || 1;
    dots.width = Math.max(1, Math.round(mm.clientWidth * r));
    dots.height = Math.max(1, Math.round(mm.clientHeight * r));
    const ctx = dots.getContext("2d");
    ctx.clearRect(0, 0, dots.width, dots.height);
    const laneW = dots.width / Math.max(1, D.hosts.length);
    const rowH = dots.height / Math.max(1, D.rows);
    const dot = Math.max(1, Math.min(3 * r, rowH));
    for (const e of D.ev) {
      if (hiddenHosts.has(String(e[0])) || hiddenTags.has(String(e[2]))) continue;
      ctx.fillStyle = color(e[2]);
      ctx.fillRect(laneW * (e[0] + 0.5) - dot, e[1] * rowH, 2 * dot, dot);
    }
  }
  function drawMinimap() {
    const ctx = mm.getContext("2d");
    if (mm.width !== dots.width || mm.height !== dots.height) {
      mm.width = dots.width;
      mm.height = dots.height;
    }
    ctx.clearRect(0, 0, mm.width, mm.height);
    ctx.drawImage(dots, 0, 0);
    const y = (box.scrollTop / height) * mm.height;
    const h = Math.max(2, Math.min(1, box.clientHeight / height) * mm.height);
    ctx.strokeStyle = "rgba(0,0,0,.7)";
    ctx.lineWidth = Math.max(1, window.devicePixelRatio || 1);
    ctx.strokeRect(1, y, mm.width - 2, h);
  }
  function jump(ev) {
    const rect = mm.getBoundingClientRect();
    const f = (ev.clientY - rect.top) / rect.height;
    box.scrollTop = f * height - box.clientHeight / 2;
  }
  let dragging = false;
  mm.addEventListener("mousedown", (ev) => { dragging = true; jump(ev); });
  window.addEventListener("mousemove", (ev) => { if (dragging) jump(ev); });
  window.addEventListener("mouseup", () => { dragging = false; });
  box.addEventListener("scroll", drawMinimap, { passive: true });
  window.addEventListener("resize", () => { renderDots(); drawMinimap(); });

  renderDots();
  drawMinimap();
})();
