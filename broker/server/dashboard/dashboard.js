// ProntoDB's dashboard (docs/DASHBOARD.md): reads api/fleet every REFRESH_MS and a change
// stream from api/stream (server-sent events). Read-only, no framework, nothing from elsewhere.
// Every text that comes from the broker goes into the page as text (textContent), never as HTML:
// keys, values and user names are anyone's writing.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const EVENTS_KEPT = 200; // rows of the change stream kept on the page
  const TOKEN_KEY = "prontodb-token";
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    token: takeToken(),
    offset: 0, // the broker's clock minus this browser's, in seconds (lease countdowns)
    span: 600, // seconds of depth history shown
    source: null, // the EventSource of the change stream
    stream: null, // {cursor, prefix}
    lastId: null, // the stream's last event id: the last revision received whole
  };

  // Off loopback the page is opened as https://HOST:PORT/#token=TOKEN: the fragment never leaves
  // the browser. Keep the token for this tab only, and take it out of the address bar and history.
  function takeToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const given = fragment.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  const $ = (id) => document.getElementById(id);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    node.append(...children);
    return node;
  }

  function td(text, cls) {
    return el("td", cls ? { class: cls, text: String(text) } : { text: String(text) });
  }

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function brokerNow() {
    return Date.now() / 1000 + state.offset;
  }

  function setStatus(kind, message) {
    const status = $("status");
    status.dataset.state = kind;
    status.textContent = message;
  }

  function duration(seconds) {
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.floor(seconds % 60) + " s";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d " + Math.floor((seconds % 86400) / 3600) + " h";
  }

  function clock(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  }

  // -- the fleet: api/fleet ---------------------------------------------------------------

  async function refresh() {
    try {
      const answer = await fetch("api/fleet", { headers: authHeaders(), cache: "no-store" });
      if (answer.status === 401) {
        setStatus("error", "this broker wants a token: open the page as …/#token=YOUR_TOKEN");
      } else if (!answer.ok) {
        setStatus("error", "the broker answered " + answer.status + ": " + (await answer.text()));
      } else {
        const fleet = await answer.json();
        state.offset = fleet.time - Date.now() / 1000;
        render(fleet);
        setStatus("live", "live · " + clock(fleet.time));
      }
    } catch (error) {
      setStatus("error", "the broker does not answer; trying again");
    }
    setTimeout(refresh, REFRESH_MS);
  }

  function render(fleet) {
    const who = fleet.viewer ? " · viewing as " + fleet.viewer : "";
    $("broker").textContent = "up " + duration(fleet.uptime) + who;
    state.span = fleet.history.span;
    $("history-span").textContent = Math.round(state.span / 60) + " minutes";
    const queues = queueRows(fleet);
    renderQueues(fleet, queues);
    renderClaims(fleet);
    renderDead(fleet, queues);
    const agents = renderAgents(fleet);
    let ready = 0;
    let claimed = 0;
    let dead = 0;
    for (const db of Object.values(fleet.databases)) {
      claimed += db.claims_in_flight;
      for (const q of Object.values(db.queues)) {
        ready += q.ready;
        dead += q.dead;
      }
    }
    $("total-queues").textContent = queues.length;
    $("total-ready").textContent = ready;
    $("total-claimed").textContent = claimed;
    $("total-dead").textContent = dead;
    $("total-dead").classList.toggle("bad", dead > 0);
    $("total-agents").textContent = agents.users;
    $("total-connections").textContent = agents.connections;
  }

  function queueRows(fleet) {
    const rows = [];
    for (const [cursor, db] of Object.entries(fleet.databases)) {
      for (const [queue, counts] of Object.entries(db.queues)) rows.push({ cursor, queue, counts });
    }
    return rows;
  }

  function renderQueues(fleet, rows) {
    const series = new Map();
    for (const s of fleet.history.series) series.set(s.cursor + "\u0000" + s.queue, s.points);
    const body = $("queues").tBodies[0];
    body.replaceChildren(
      ...rows.map(({ cursor, queue, counts }) => {
        const c = counts;
        const past = series.get(cursor + "\u0000" + queue) || [];
        const points = [...past, [fleet.time, c.ready, c.delayed, c.claimed, c.dead]];
        const age = c.oldest_ready_age == null ? "–" : duration(c.oldest_ready_age);
        const row = el(
          "tr",
          { "data-queue": cursor + "/" + queue },
          td(cursor),
          td(queue || "(top level)", "key"),
          el("td", {}, sparkline(points, fleet.time)),
          el("td", { class: "num", "data-field": "ready", text: String(c.ready) }),
          el("td", { class: "num", "data-field": "delayed", text: String(c.delayed) }),
          el("td", { class: "num", "data-field": "claimed", text: String(c.claimed) }),
          el("td", { class: "num" + (c.dead ? " dead-count" : ""), "data-field": "dead", text: String(c.dead) }),
          td(age, "num"),
        );
        return row;
      }),
    );
    $("queues-empty").hidden = rows.length > 0;
    const untracked = Object.entries(fleet.databases).filter(([, db]) => db.queues_untracked > 0);
    const note = $("queues-untracked");
    note.hidden = untracked.length === 0 && fleet.databases_untracked === 0;
    note.textContent = untracked
      .map(([name, db]) => name + ": " + db.queues_untracked + " more queues (the deepest " + fleet.caps.queues + " are listed)")
      .concat(fleet.databases_untracked ? [fleet.databases_untracked + " more databases open"] : [])
      .join("; ");
  }

  // A small chart of a queue's depth: the total (ready + delayed + claimed + dead) as a line over
  // a shaded ready area, and the claimed items dashed; the last span seconds, the newest at right.
  function sparkline(points, now) {
    const width = 190;
    const height = 34;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.dataset.points = String(points.length);
    // The last span seconds, or less while the broker is younger: from its first sample on.
    const first = points.length ? points[0][0] : now;
    const start = Math.max(now - state.span, Math.min(first, now - 60));
    const span = now - start;
    const shown = points.filter((p) => p[0] >= start);
    const total = (p) => p[1] + p[2] + p[3] + p[4];
    const top = Math.max(1, ...shown.map(total));
    const x = (t) => (((t - start) / span) * (width - 2) + 1).toFixed(1);
    const y = (v) => (height - 2 - (v / top) * (height - 5)).toFixed(1);
    const line = (value) => shown.map((p) => x(p[0]) + "," + y(value(p))).join(" ");
    const base = document.createElementNS(SVG, "line");
    base.setAttribute("class", "base");
    base.setAttribute("x1", "0");
    base.setAttribute("x2", String(width));
    base.setAttribute("y1", String(height - 1.5));
    base.setAttribute("y2", String(height - 1.5));
    svg.append(base);
    if (shown.length > 0) {
      const first = shown[0];
      const last = shown[shown.length - 1];
      const area = document.createElementNS(SVG, "polygon");
      area.setAttribute("class", "area");
      area.setAttribute("points", `${x(first[0])},${y(0)} ${line((p) => p[1])} ${x(last[0])},${y(0)}`);
      const claimed = document.createElementNS(SVG, "polyline");
      claimed.setAttribute("class", "claimed");
      claimed.setAttribute("points", line((p) => p[3]));
      const totalLine = document.createElementNS(SVG, "polyline");
      totalLine.setAttribute("class", "total");
      totalLine.setAttribute("points", line(total));
      const title = document.createElementNS(SVG, "title");
      title.textContent = `now ${total(last)} (ready ${last[1]}, claimed ${last[3]}); at most ${top} in the last ${duration(span)}`;
      svg.append(area, claimed, totalLine, title);
    }
    return svg;
  }

  function renderClaims(fleet) {
    const body = $("claims").tBodies[0];
    body.replaceChildren(
      ...fleet.claims.map((c) =>
        el(
          "tr",
          { "data-key": c.key },
          td(c.key, "key"),
          td(c.holder, "holder"),
          td(c.deliveries, "num"),
          el("td", { class: "num lease", "data-lease": String(c.lease) }),
        ),
      ),
    );
    tickLeases();
    $("claims-empty").hidden = fleet.claims.length > 0;
    let inFlight = 0;
    for (const db of Object.values(fleet.databases)) inFlight += db.claims_in_flight;
    const more = $("claims-more");
    more.hidden = inFlight <= fleet.claims.length;
    more.textContent = inFlight - fleet.claims.length + " more not listed (the first " + fleet.caps.claims + ", or those you may not read)";
  }

  function tickLeases() {
    const now = brokerNow();
    for (const cell of document.querySelectorAll("td.lease")) {
      const left = Number(cell.dataset.lease) - now;
      cell.textContent = left > 0 ? duration(left) : "expired";
      cell.classList.toggle("late", left < 5);
    }
  }

  function renderDead(fleet, queues) {
    const body = $("dead").tBodies[0];
    body.replaceChildren(
      ...fleet.dead.map((d) =>
        el("tr", { "data-key": d.key }, td(d.key, "key"), td(d.by), td(clock(d.time), "num")),
      ),
    );
    $("dead-empty").hidden = fleet.dead.length > 0;
    const buried = queues.filter((q) => q.counts.dead > 0).map((q) => q.queue + ": " + q.counts.dead);
    let total = 0;
    for (const db of Object.values(fleet.databases)) total += db.dead_letters;
    $("dead-counts").textContent =
      (buried.length ? "by queue: " + buried.join(", ") + ". " : "") +
      total + " moved to dead.* since the broker started.";
  }

  function renderAgents(fleet) {
    const users = new Map();
    for (const row of fleet.connections) {
      const seen = users.get(row.user) || { connections: 0, watchers: 0, transports: new Set() };
      seen.connections += row.connections;
      seen.watchers += row.watchers;
      seen.transports.add(row.transport);
      users.set(row.user, seen);
    }
    const sorted = [...users.entries()].sort((a, b) => b[1].connections - a[1].connections || (a[0] < b[0] ? -1 : 1));
    $("agents").tBodies[0].replaceChildren(
      ...sorted.map(([user, seen]) =>
        el(
          "tr",
          { "data-user": user },
          td(user),
          td(seen.connections, "num"),
          td(seen.watchers, "num"),
          td([...seen.transports].sort().join(", ")),
        ),
      ),
    );
    $("agents-empty").hidden = users.size > 0;
    let connections = 0;
    for (const seen of users.values()) connections += seen.connections;
    return { users: users.size, connections };
  }

  // -- the change stream: api/stream (server-sent events) ---------------------------------

  function streamUrl(cursor, prefix, from) {
    const query = new URLSearchParams({ cursor, prefix });
    if (from) query.set("from", String(from));
    if (state.token) query.set("access_token", state.token); // an EventSource sends no headers
    return "api/stream?" + query;
  }

  function setStreamState(kind, message) {
    const line = $("stream-state");
    line.dataset.state = kind;
    line.textContent = message;
  }

  function where() {
    const { cursor, prefix } = state.stream;
    return cursor + (prefix ? " · " + prefix : " · every key");
  }

  // Watch cursor/prefix from revision `from` (0: from now). The browser reconnects by itself after
  // a dropped connection, sending the last event id (a revision): the broker resumes after it.
  function watch(cursor, prefix, from) {
    if (state.source) state.source.close();
    state.stream = { cursor, prefix };
    state.lastId = null;
    const url = streamUrl(cursor, prefix, from);
    const source = new EventSource(url);
    state.source = source;
    setStreamState("connecting", "connecting…");
    source.addEventListener("ready", (event) => {
      state.lastId = event.lastEventId;
      const data = JSON.parse(event.data);
      setStreamState("live", "watching " + where() + " from revision " + data.next_rev);
    });
    source.addEventListener("changes", (event) => {
      state.lastId = event.lastEventId;
      const data = JSON.parse(event.data);
      addEvents(data.events);
      setStreamState("live", "watching " + where() + " · at revision " + (data.next_rev - 1));
    });
    source.addEventListener("progress", (event) => {
      state.lastId = event.lastEventId;
    });
    source.addEventListener("end", (event) => {
      source.close();
      const data = JSON.parse(event.data);
      if (data.code === "compacted" || data.code === "overflow") {
        setStreamState("reconnecting", "fell behind the history the broker keeps; watching from now");
        watch(cursor, prefix, 0);
      } else {
        setStreamState("ended", "ended: " + data.message);
      }
    });
    source.addEventListener("error", () => {
      if (source !== state.source) return;
      if (source.readyState === EventSource.CONNECTING) {
        const after = state.lastId ? " after revision " + state.lastId : "";
        setStreamState("reconnecting", "connection lost; resuming" + after + "…");
      } else {
        explainRefusal(url, cursor, prefix);
      }
    });
  }

  // An EventSource refused (not 200) says nothing of why: ask again to read the answer.
  async function explainRefusal(url, cursor, prefix) {
    const abort = new AbortController();
    try {
      const answer = await fetch(url, { signal: abort.signal, cache: "no-store" });
      if (answer.ok) {
        abort.abort();
        setStreamState("reconnecting", "stream closed; starting again…");
        setTimeout(() => watch(cursor, prefix, state.lastId ? Number(state.lastId) + 1 : 0), REFRESH_MS);
      } else if (answer.status === 503) {
        setStreamState("refused", (await answer.text()).trim() + " (trying again)");
        setTimeout(() => watch(cursor, prefix, 0), 5 * REFRESH_MS);
      } else {
        setStreamState("refused", "refused: " + (await answer.text()).trim());
      }
    } catch (error) {
      setStreamState("reconnecting", "the broker does not answer; trying again…");
      setTimeout(() => watch(cursor, prefix, state.lastId ? Number(state.lastId) + 1 : 0), REFRESH_MS);
    }
  }

  function addEvents(events) {
    const body = $("events").tBodies[0];
    const rows = events.map((e) => {
      let value = e.value === undefined ? "" : e.value;
      if (e.truncated) value += "…";
      return el(
        "tr",
        { class: "fresh", "data-key": e.key, "data-rev": String(e.rev) },
        td(e.rev, "num"),
        el("td", {}, el("span", { class: "badge " + e.type, text: e.type })),
        td(e.key, "key"),
        td(value, "value"),
        td(e.by),
        td(clock(e.time), "num"),
      );
    });
    body.prepend(...rows.reverse()); // the newest on top
    while (body.rows.length > EVENTS_KEPT) body.deleteRow(-1);
    $("events-empty").hidden = body.rows.length > 0;
  }

  function start() {
    const asked = new URLSearchParams(location.search);
    $("stream-cursor").value = asked.get("cursor") || "default";
    $("stream-prefix").value = asked.get("prefix") || "";
    $("stream-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("events").tBodies[0].replaceChildren();
      $("events-empty").hidden = false;
      watch($("stream-cursor").value.trim() || "default", $("stream-prefix").value.trim(), 0);
    });
    refresh();
    setInterval(tickLeases, 250);
    watch($("stream-cursor").value.trim() || "default", $("stream-prefix").value.trim(), 0);
  }

  start();
})();
