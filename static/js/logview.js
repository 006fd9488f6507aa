/*
 * The live log view: connects to /ws/logs/<plugin>/<user>/, shows replayed and live lines,
 * colours levels and ANSI SGR codes, follows the tail (with a pause), and reconnects with
 * backoff, resuming after the last line id it saw so nothing is lost or shown twice.
 *
 * It is also the only renderer of stored lines: the run page hands it the tail of the log as
 * JSON (the same shape as live lines) and it fetches earlier pages on request, so history and
 * live lines are drawn by the same code (one ANSI renderer, one escaping rule).
 *
 * Safety: every piece of text goes into the DOM through textContent; no line is ever parsed
 * as HTML, so a plugin that logs "<script>" shows exactly that text.
 */
(function () {
  "use strict";

  var MAX_LINES = 5000;           // keep the page light during long runs
  var MAX_RUN_CHIPS = 6;
  var REFUSED = { 4401: "log in to see this log", 4403: "you may not see this log", 4404: "no such log" };
  var FELL_BEHIND = 4429;         // the server dropped this socket's backlog: resume from stored lines
  var SGR = /\x1b\[([0-9;]*)m/g;
  var OTHER_ESCAPES = /\x1b\[[0-9;?]*[A-Za-z]/g;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /* Split a message into [{text, fg, bold}] following SGR codes 0, 1, 22, 30-37, 39, 90-97. */
  function ansiSegments(message) {
    var segments = [];
    var state = { fg: null, bold: false };
    var pos = 0;
    var match;
    SGR.lastIndex = 0;
    function push(text) {
      text = text.replace(OTHER_ESCAPES, "");
      if (text) segments.push({ text: text, fg: state.fg, bold: state.bold });
    }
    while ((match = SGR.exec(message)) !== null) {
      push(message.slice(pos, match.index));
      var codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
      codes.forEach(function (code) {
        if (code === 0) { state.fg = null; state.bold = false; }
        else if (code === 1) state.bold = true;
        else if (code === 22) state.bold = false;
        else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) state.fg = code;
        else if (code === 39) state.fg = null;
      });
      pos = SGR.lastIndex;
    }
    push(message.slice(pos));
    return segments;
  }

  function renderMessage(target, message) {
    ansiSegments(String(message)).forEach(function (seg) {
      if (seg.fg === null && !seg.bold) {
        target.appendChild(document.createTextNode(seg.text));
        return;
      }
      var classes = [];
      if (seg.fg !== null) classes.push("ansi-" + seg.fg);
      if (seg.bold) classes.push("ansi-bold");
      target.appendChild(el("span", classes.join(" "), seg.text));
    });
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function LogView(root) {
    this.root = root;
    this.wsPath = root.getAttribute("data-ws-path") || "";
    this.runFilter = root.hasAttribute("data-run") ? Number(root.getAttribute("data-run")) : null;
    this.list = root.querySelector("[data-lines]");
    this.stateEl = root.querySelector(".logview-state");
    this.countEl = root.querySelector("[data-count]");
    this.runsEl = root.querySelector("[data-runs]");
    this.pauseBtn = root.querySelector('[data-action="pause"]');
    this.pausedNote = root.querySelector(".logview-paused-note");
    this.jobs = {};
    this.runs = {};
    this.runOrder = [];
    this.headed = new Set();        // runs whose heading line is shown (once per run, not per switch)
    this.filter = { kind: "all", id: null };
    this.filterEl = root.querySelector("[data-filter]");
    this.seen = new Set();
    this.lastId = Number(root.getAttribute("data-after") || 0);
    this.lastRun = null;
    this.paused = false;
    this.attempt = 0;
    this.everConnected = false;
    this.socket = null;
    this.earlierUrl = root.getAttribute("data-earlier-url");
    this.firstSeq = Number(root.getAttribute("data-first-seq") || 0);
    this.earlierBtn = root.querySelector('[data-action="earlier"]');
    var self = this;
    // Stored lines come as JSON and go through append(), exactly like lines from the socket.
    var initial = root.querySelector('script[type="application/json"]');
    if (initial) {
      try { this.append(JSON.parse(initial.textContent)); } catch (err) { this.marker("could not read the stored lines"); }
    }
    this.updateCount();
    if (this.earlierBtn) this.earlierBtn.addEventListener("click", function () { self.loadEarlier(); });
    if (this.pauseBtn) this.pauseBtn.addEventListener("click", function () { self.setPaused(!self.paused); });
    if (this.filterEl) this.filterEl.addEventListener("change", function () {
      var parts = self.filterEl.value.split(":");
      self.setFilter(parts[0], parts.length > 1 ? Number(parts[1]) : null);
    });
    var clearBtn = root.querySelector('[data-action="clear"]');
    if (clearBtn) clearBtn.addEventListener("click", function () {
      self.list.textContent = "";
      self.lastRun = null;
      self.updateCount();
    });
    // Scrolling up to read pauses the tail; scrolling back to the end resumes it.
    this.list.addEventListener("scroll", function () {
      var atEnd = self.list.scrollHeight - self.list.scrollTop - self.list.clientHeight < 24;
      if (!atEnd && !self.paused && self.pauseBtn) self.setPaused(true, true);
      else if (atEnd && self.paused && self.autoPaused) self.setPaused(false);
    });
    this.scrollToEnd();
    if (this.wsPath) this.connect();
    else this.setState("complete", "complete");
  }

  LogView.prototype.setState = function (state, text) {
    this.stateEl.setAttribute("data-state", state);
    this.stateEl.textContent = text;
    this.root.setAttribute("data-connection", state);
  };

  LogView.prototype.setPaused = function (paused, auto) {
    this.paused = paused;
    this.autoPaused = Boolean(paused && auto);
    this.pauseBtn.setAttribute("aria-pressed", paused ? "true" : "false");
    this.pauseBtn.textContent = paused ? "Resume" : "Pause";
    if (this.pausedNote) this.pausedNote.hidden = !paused;
    if (!paused) this.scrollToEnd();
  };

  LogView.prototype.scrollToEnd = function () {
    this.list.scrollTop = this.list.scrollHeight;
  };

  LogView.prototype.updateCount = function () {
    if (this.countEl) this.countEl.textContent = String(this.list.querySelectorAll(".logline[data-id]").length);
  };

  LogView.prototype.url = function () {
    var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    var params = [];
    if (this.lastId) params.push("after=" + encodeURIComponent(this.lastId));
    if (this.runFilter !== null) params.push("run=" + encodeURIComponent(this.runFilter));
    return proto + "//" + window.location.host + this.wsPath + (params.length ? "?" + params.join("&") : "");
  };

  LogView.prototype.connect = function () {
    var self = this;
    this.setState(this.everConnected ? "reconnecting" : "connecting", this.everConnected ? "reconnecting…" : "connecting…");
    var socket;
    try {
      socket = new WebSocket(this.url());
    } catch (err) {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onopen = function () {
      self.attempt = 0;
    };
    socket.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (err) { return; }
      self.handle(msg);
    };
    socket.onclose = function (event) {
      self.socket = null;
      if (REFUSED[event.code]) {
        self.setState("refused", "refused: " + REFUSED[event.code]);
        return;
      }
      if (self.behind || event.code === FELL_BEHIND) {
        // Not an outage: the lines are stored, so catch up at once from the last one shown.
        self.attempt = 0;
        self.connect();
        return;
      }
      if (self.everConnected) self.marker("disconnected; reconnecting…");
      self.scheduleReconnect();
    };
  };

  LogView.prototype.scheduleReconnect = function () {
    var self = this;
    // 0.5 s, 1 s, 2 s ... capped at 15 s, with jitter so many browsers don't return at once.
    var delay = Math.min(15000, 500 * Math.pow(2, this.attempt)) * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.setState("reconnecting", "disconnected · retrying in " + Math.max(1, Math.round(delay / 1000)) + " s");
    window.setTimeout(function () { self.connect(); }, delay);
  };

  LogView.prototype.handle = function (msg) {
    if (msg.type === "hello") {
      var wasConnected = this.everConnected;
      this.everConnected = true;
      this.jobs = msg.jobs || {};
      if (this.finished) this.setState("complete", "complete");
      else this.setState("live", "live");
      this.updateFilterOptions();
      if (wasConnected && !this.behind) this.marker("reconnected; resumed after line " + this.lastId);
      this.behind = false;
      if (msg.notice && !wasConnected) {
        this.marker(msg.notice);
        this.setState("disconnected", "not live");
      }
      var self = this;
      (msg.runs || []).forEach(function (run) { self.updateRun(run); });
    } else if (msg.type === "lines") {
      this.append(msg.lines || []);
    } else if (msg.type === "run") {
      this.updateRun(msg.run);
    } else if (msg.type === "behind") {
      // The server stopped sending live lines to this socket: close it and resume after the
      // last line shown (onclose reconnects at once).
      this.behind = true;
      this.marker("this view fell behind; catching up from stored lines…");
      if (this.socket) this.socket.close();
    }
  };

  LogView.prototype.jobLabel = function (jobId) {
    var label = this.jobs[String(jobId)];
    return label ? label : "job " + jobId;
  };

  LogView.prototype.lineNode = function (line) {
    var level = String(line.level || "INFO");
    var li = el("li", "logline lvl-" + level.toLowerCase());
    li.setAttribute("data-id", String(line.id));
    li.setAttribute("data-run", String(line.run));
    li.setAttribute("data-job", String(line.job));
    li.setAttribute("data-seq", String(line.seq));
    var time = el("time", null, clock(line.ts));
    time.setAttribute("datetime", line.ts);
    li.appendChild(time);
    if (this.runFilter === null) {
      var tag = el("span", "run-tag");
      var link = el("a", null, "#" + line.run);
      link.href = "/runs/" + encodeURIComponent(line.run) + "/";
      link.title = "run " + line.run + " of " + this.jobLabel(line.job);
      tag.appendChild(link);
      li.appendChild(tag);
    }
    li.appendChild(el("span", "lvl", level));
    var msg = el("span", "msg");
    renderMessage(msg, line.message);
    li.appendChild(msg);
    return li;
  };

  LogView.prototype.append = function (lines) {
    var fragment = document.createDocumentFragment();
    var added = 0;
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (this.seen.has(line.id)) continue;
      if (this.runFilter !== null && line.run !== this.runFilter) continue;
      this.seen.add(line.id);
      if (line.id > this.lastId) this.lastId = line.id;
      if (this.runFilter === null && !this.headed.has(line.run)) {
        // One heading where a run's lines begin; interleaved runs are told apart by each line's #tag.
        this.headed.add(line.run);
        fragment.appendChild(this.applyFilter(this.runHeader(line)));
      }
      this.lastRun = line.run;
      fragment.appendChild(this.applyFilter(this.lineNode(line)));
      added++;
    }
    if (!added) return;
    var empty = this.list.querySelector(".logview-empty");
    if (empty) empty.remove();
    this.list.appendChild(fragment);
    var trimmed = false;
    while (this.list.children.length > MAX_LINES) { this.list.removeChild(this.list.firstChild); trimmed = true; }
    if (trimmed && this.earlierBtn) {
      // The oldest lines left the page to keep it light; they can be fetched again.
      var first = this.list.querySelector(".logline[data-seq]");
      if (first) { this.firstSeq = Number(first.getAttribute("data-seq")); this.earlierBtn.hidden = false; }
    }
    if (this.seen.size > MAX_LINES * 4) this.seen = new Set(Array.prototype.map.call(this.list.children, function (li) { return Number(li.getAttribute("data-id")); }));
    this.updateCount();
    if (!this.paused) this.scrollToEnd();
  };

  /* "Earlier lines": the page of stored lines before the first one shown (by sequence number). */
  LogView.prototype.loadEarlier = function () {
    var self = this;
    if (!this.earlierUrl || !this.firstSeq || this.loadingEarlier) return;
    this.loadingEarlier = true;
    this.earlierBtn.disabled = true;
    fetch(this.earlierUrl + "?before=" + encodeURIComponent(this.firstSeq), {
      credentials: "same-origin",
      headers: { Accept: "application/json" }
    })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        self.prepend(data.lines || []);
        self.earlierBtn.hidden = !data.earlier;
      })
      .catch(function (err) { self.marker("could not load earlier lines (" + err.message + ")"); })
      .then(function () { self.loadingEarlier = false; self.earlierBtn.disabled = false; });
  };

  LogView.prototype.prepend = function (lines) {
    var fragment = document.createDocumentFragment();
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (this.seen.has(line.id)) continue;
      this.seen.add(line.id);
      fragment.appendChild(this.lineNode(line));
    }
    if (lines.length) this.firstSeq = lines[0].seq;
    var empty = this.list.querySelector(".logview-empty");
    if (empty) empty.remove();
    // Keep the line the reader is looking at where it is.
    var height = this.list.scrollHeight;
    this.list.insertBefore(fragment, this.list.firstChild);
    this.list.scrollTop += this.list.scrollHeight - height;
    this.updateCount();
  };

  /* A heading line where the lines of another run begin: which run, of which configuration. */
  LogView.prototype.runHeader = function (line) {
    var li = el("li", "logline is-run-header");
    li.setAttribute("data-run-header", String(line.run));
    li.setAttribute("data-job", String(line.job));
    var link = el("a", null, "run #" + line.run);
    link.href = "/runs/" + encodeURIComponent(line.run) + "/";
    li.appendChild(link);
    li.appendChild(document.createTextNode(" · " + this.jobLabel(line.job)));
    return li;
  };

  LogView.prototype.marker = function (text) {
    var li = el("li", "logline is-marker", "— " + text + " —");
    this.list.appendChild(li);
    if (!this.paused) this.scrollToEnd();
  };

  /* Show every line, one configuration's (kind "job") or one run's (kind "run"). */
  LogView.prototype.setFilter = function (kind, id) {
    this.filter = { kind: kind || "all", id: id };
    var self = this;
    Array.prototype.forEach.call(this.list.querySelectorAll(".logline[data-run], .logline[data-run-header]"), function (li) { self.applyFilter(li); });
    this.root.setAttribute("data-filter-kind", this.filter.kind);
    if (!this.paused) this.scrollToEnd();
  };

  LogView.prototype.applyFilter = function (li) {
    var f = this.filter;
    var run = Number(li.getAttribute("data-run") || li.getAttribute("data-run-header"));
    li.hidden = f.kind === "run" ? run !== f.id
      : f.kind === "job" ? Number(li.getAttribute("data-job")) !== f.id : false;
    return li;
  };

  LogView.prototype.updateFilterOptions = function () {
    if (!this.filterEl) return;
    var current = this.filterEl.value;
    var self = this;
    this.filterEl.textContent = "";
    function option(value, text) {
      var node = el("option", null, text);
      node.value = value;
      self.filterEl.appendChild(node);
    }
    option("all", "All configurations");
    Object.keys(this.jobs).forEach(function (id) { option("job:" + id, "Configuration: " + self.jobs[id]); });
    this.runOrder.slice().reverse().forEach(function (id) { option("run:" + id, "Run #" + id + " only"); });
    if (this.filter.kind === "run" && this.runOrder.indexOf(this.filter.id) === -1) option(current, "Run #" + this.filter.id + " only");
    this.filterEl.value = current && Array.prototype.some.call(this.filterEl.options, function (o) { return o.value === current; }) ? current : "all";
  };

  LogView.prototype.updateRun = function (run) {
    if (run) document.dispatchEvent(new CustomEvent("jobscheduler:run", { detail: run }));  // pages.js follows it
    if (!run || (this.runFilter !== null && run.id !== this.runFilter)) {
      return;
    }
    if (this.runFilter !== null) {
      var badge = document.querySelector("[data-run-status]");
      if (badge) {
        badge.textContent = run.status.replace("_", " ");
        badge.className = "badge badge-" + run.status.replace("_", "-");
      }
      if (["succeeded", "failed", "timed_out", "cancelled", "lost"].indexOf(run.status) !== -1) {
        this.marker("run " + run.status.replace("_", " ") + (run.error ? ": " + run.error : ""));
        this.finished = true;
        this.setState("complete", "complete");
      }
      return;
    }
    this.updateJobCard(run);
    var isNew = !this.runs[run.id];
    if (isNew) this.runOrder.push(run.id);
    this.runs[run.id] = run;
    while (this.runOrder.length > MAX_RUN_CHIPS) delete this.runs[this.runOrder.shift()];
    var self = this;
    this.runsEl.textContent = "";
    this.runOrder.slice().reverse().forEach(function (id) {
      var r = self.runs[id];
      var chip = el("span", "runchip");
      chip.setAttribute("data-status", r.status);
      chip.setAttribute("data-run-chip", String(r.id));
      var link = el("a", null, "#" + r.id + " " + self.jobLabel(r.job) + " · " + r.status.replace("_", " "));
      link.href = "/runs/" + encodeURIComponent(r.id) + "/";
      if (r.error) link.title = r.error;
      chip.appendChild(link);
      var only = el("button", "runchip-only", "only");
      only.type = "button";
      only.title = "Show only the lines of run #" + r.id;
      only.addEventListener("click", function () {
        self.setFilter("run", r.id);
        self.updateFilterOptions();
        if (self.filterEl) self.filterEl.value = "run:" + r.id;
      });
      chip.appendChild(only);
      self.runsEl.appendChild(chip);
    });
    if (isNew) this.updateFilterOptions();
  };

  /* On the plugin page, keep each job's "Last run" cell current as runs start and finish. */
  LogView.prototype.updateJobCard = function (run) {
    var cell = document.querySelector('[data-last-run-for="' + Number(run.job) + '"]');
    if (!cell) return;
    if (window.jobschedulerFillRunCell) { window.jobschedulerFillRunCell(cell, run); return; }
    var shown = cell.querySelector("a[data-run-id]");
    if (shown && Number(shown.getAttribute("data-run-id")) > run.id) return;
    cell.textContent = "";
    var badge = el("a", "badge badge-" + run.status.replace("_", "-"), run.status.replace("_", " "));
    badge.href = "/runs/" + encodeURIComponent(run.id) + "/";
    badge.setAttribute("data-run-id", String(run.id));
    if (run.error) badge.title = run.error;
    cell.appendChild(badge);
    var when = run.finished_at || run.started_at || run.slot;
    if (when) cell.appendChild(el("span", "muted", " " + clock(when)));
    if (run.started_at && run.finished_at) {
      var seconds = (new Date(run.finished_at) - new Date(run.started_at)) / 1000;
      cell.appendChild(el("span", "muted", " · " + seconds.toFixed(2) + " s"));
    }
  };

  function init() {
    var roots = document.querySelectorAll("[data-logview]");
    window.jobschedulerLogViews = Array.prototype.map.call(roots, function (root) { return new LogView(root); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
