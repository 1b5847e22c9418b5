// The operator page (SPEC §6.6): sign in, list orders and print jobs, and keep both lists current
// from the Socket.IO stream of the tenant. Every request is same-origin, so the session cookie
// (HttpOnly) rides along by itself, on the API calls and on the Socket.IO handshake alike.
"use strict";

(function () {
  const API = "/api/v1";
  // The most rows a list shows; the API's page size limit (SPEC §4).
  const LIMIT = 100;

  const $ = (id) => document.getElementById(id);
  const orders = new Map();
  const jobs = new Map();
  let socket = null;

  function show(element, visible) {
    element.hidden = !visible;
  }

  function say(text) {
    $("message").textContent = text || "";
    show($("message"), Boolean(text));
  }

  // The API's errors carry `message` as a string or a list (SPEC §4).
  async function reason(response) {
    try {
      const body = await response.json();
      return Array.isArray(body.message) ? body.message.join(", ") : String(body.message);
    } catch (_) {
      return response.status + " " + response.statusText;
    }
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init);
  }

  function setLive(state, text) {
    const badge = $("live");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  // An entity replaces what the page holds only if it is at least as new: events and list pages can
  // arrive in any order, and an older snapshot must never overwrite a newer one.
  function upsert(map, entity) {
    if (!entity || typeof entity.id !== "string") return false;
    const held = map.get(entity.id);
    if (held && Date.parse(held.updatedAt) > Date.parse(entity.updatedAt)) return false;
    if (held && held.version !== undefined && entity.version !== undefined && held.version > entity.version) return false;
    map.set(entity.id, entity);
    return true;
  }

  function newestFirst(map) {
    return Array.from(map.values())
      .sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt) || (a.id < b.id ? 1 : -1))
      .slice(0, LIMIT);
  }

  function when(timestamp) {
    const date = new Date(timestamp);
    return isNaN(date) ? "" : date.toLocaleString();
  }

  function row(id, cells, fresh) {
    const tr = document.createElement("tr");
    tr.dataset.id = id;
    if (fresh) tr.className = "fresh";
    for (const [text, className] of cells) {
      const td = document.createElement("td");
      td.textContent = text == null ? "" : String(text);
      if (className) td.className = className;
      tr.appendChild(td);
    }
    return tr;
  }

  function renderOrders(freshId) {
    const list = newestFirst(orders);
    $("orders").replaceChildren(
      ...list.map((o) =>
        row(o.id, [
          [o.orderNumber],
          [o.customerName],
          [o.status, "status"],
          [(o.totalPrice || "") + " " + (o.currency || ""), "num"],
          [when(o.updatedAt)],
        ], o.id === freshId)
      )
    );
    $("orders-count").textContent = "(" + orders.size + ")";
  }

  function renderJobs(freshId) {
    const list = newestFirst(jobs);
    $("jobs").replaceChildren(
      ...list.map((j) => {
        const order = j.orderId ? orders.get(j.orderId) : null;
        const orderLabel = j.orderId ? (order ? order.orderNumber : j.orderId.slice(0, 8)) : "stock";
        return row(j.id, [
          [j.fileName],
          [orderLabel],
          [j.status, "status"],
          [j.attempts, "num"],
          [when(j.updatedAt)],
        ], j.id === freshId);
      })
    );
    $("jobs-count").textContent = "(" + jobs.size + ")";
  }

  async function load(path, map) {
    const response = await api("GET", path + "?page=1&pageSize=" + LIMIT);
    if (response.status === 401) {
      signedOut("Your session has ended; please sign in again.");
      return false;
    }
    if (!response.ok) {
      say("Could not load " + path + ": " + (await reason(response)));
      return false;
    }
    const page = await response.json();
    for (const item of page.items || []) upsert(map, item);
    return true;
  }

  // Lists are (re)loaded on every connect, so whatever changed while the stream was down shows.
  async function reload() {
    const ok = (await load("/orders", orders)) && (await load("/print-jobs", jobs));
    if (ok) {
      renderOrders();
      renderJobs();
    }
  }

  function onEvent(name, payload) {
    if (name.startsWith("order:")) {
      if (upsert(orders, payload)) {
        renderOrders(payload.id);
        renderJobs();
      }
    } else if (name.startsWith("printjob:")) {
      if (upsert(jobs, payload)) renderJobs(payload.id);
    }
  }

  function connect() {
    if (typeof io !== "function") {
      setLive("offline", "offline");
      say("The Socket.IO client did not load; live updates are off.");
      return;
    }
    socket = io("/events", { path: "/socket.io", withCredentials: true });
    socket.on("connect", () => {
      setLive("live", "live");
      say("");
      reload();
    });
    socket.on("disconnect", () => setLive("offline", "reconnecting…"));
    socket.on("connect_error", async (error) => {
      setLive("offline", "offline");
      // The gateway refuses a handshake without a session (401) and the client would retry it
      // forever: find out whether the session is gone. Retries are backed off, so this is rare.
      try {
        const me = await api("GET", "/auth/me");
        if (me.status === 401) {
          signedOut("Your session has ended; please sign in again.");
          return;
        }
      } catch (_) {
        // forma does not answer at all: the client keeps retrying; say so below.
      }
      say("Live updates are unavailable: " + (error && error.message ? error.message : "connection failed"));
    });
    socket.onAny(onEvent);
  }

  function disconnect() {
    if (socket) {
      socket.offAny();
      socket.disconnect();
      socket = null;
    }
  }

  function signedIn(user) {
    $("who").textContent = user.email;
    show($("sign-in"), false);
    show($("session"), true);
    show($("dashboard"), true);
    setLive("offline", "connecting…");
    connect();
  }

  function signedOut(text) {
    disconnect();
    orders.clear();
    jobs.clear();
    $("orders").replaceChildren();
    $("jobs").replaceChildren();
    show($("session"), false);
    show($("dashboard"), false);
    show($("sign-in"), true);
    say(text);
    $("email").focus();
  }

  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter || $("sign-in").querySelector("button");
    button.disabled = true;
    try {
      const response = await api("POST", "/auth/login", {
        email: $("email").value,
        password: $("password").value,
      });
      if (!response.ok) {
        say(response.status === 401 ? "Wrong e-mail or password." : await reason(response));
        return;
      }
      $("password").value = "";
      say("");
      signedIn((await response.json()).user);
    } catch (_) {
      say("forma does not answer; try again in a moment.");
    } finally {
      button.disabled = false;
    }
  });

  $("sign-out").addEventListener("click", async () => {
    disconnect();
    try {
      await api("POST", "/auth/logout");
    } catch (_) {
      // Signed out on this page either way; the session expires on the server.
    }
    signedOut("");
  });

  (async function start() {
    try {
      const response = await api("GET", "/auth/me");
      if (response.ok) {
        signedIn((await response.json()).user);
        return;
      }
    } catch (_) {
      // Not reachable: offer the form; signing in says what is wrong.
    }
    signedOut("");
  })();
})();
