// KaniTTS playground: streams 16-bit PCM from /v1/audio/speech into Web Audio.
// No dependencies, no build step. Progress is exposed on window.kanitts for tests.
"use strict";
(() => {
  const SAMPLE_RATE = 22050; // the model's own rate, asked for explicitly (no resampling)
  const LEAD_S = 0.12; // scheduling head start, absorbs network jitter
  const KEY_STORE = "kanitts.apiKey";
  const $ = (id) => document.getElementById(id);

  const k = {
    state: "idle", // idle | requesting | streaming | playing | done | stopped | error
    samplesReceived: 0,
    samplesScheduled: 0,
    samplesPlayed: 0,
    ttfaMs: null,
    error: null,
    requestId: null,
    authRequired: false,
    voicesLoaded: false,
    runs: 0,
  };
  Object.defineProperty(k, "contextTime", { get: () => (ctx ? ctx.currentTime : 0) });
  Object.defineProperty(k, "contextState", { get: () => (ctx ? ctx.state : "none") });
  window.kanitts = k;

  let voices = null;
  let ctx = null;
  let controller = null;
  let sources = new Set();
  let nextTime = 0;
  let pcmParts = [];
  let lastBody = null;
  let downloadUrl = null;
  let doneTimer = null;

  // ---- helpers ---------------------------------------------------------------------
  function apiKey() {
    try { return localStorage.getItem(KEY_STORE) || ""; } catch (_) { return ""; }
  }
  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    const key = apiKey();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }
  function setStatus(text, cls) {
    const el = $("status");
    el.textContent = text;
    el.className = cls || "";
  }
  function setState(s) {
    k.state = s;
    document.body.dataset.state = s;
  }
  function fail(msg) {
    k.error = msg;
    setState("error");
    setStatus(msg, "error");
    $("play").disabled = false;
    $("stop").disabled = true;
  }
  async function errorMessage(resp) {
    try {
      const j = await resp.json();
      if (j && j.error && j.error.message) return j.error.message + " (HTTP " + resp.status + ")";
    } catch (_) { /* not JSON */ }
    return "HTTP " + resp.status;
  }
  function showKeyBox(needed) {
    k.authRequired = needed;
    $("key-box").hidden = !needed;
    if (needed) $("api-key").focus();
  }
  function option(value, label) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    return o;
  }

  // ---- voices ----------------------------------------------------------------------
  async function loadVoices() {
    let resp;
    try {
      resp = await fetch("/v1/audio/voices", { headers: authHeaders() });
    } catch (e) {
      return fail("cannot reach the server: " + e.message);
    }
    if (resp.status === 401) {
      showKeyBox(true);
      return fail(apiKey() ? "the saved API key was refused; enter a valid key" : "this server needs an API key");
    }
    if (!resp.ok) return fail("voices: " + (await errorMessage(resp)));
    voices = await resp.json();
    const lang = $("language");
    lang.replaceChildren(option("", "auto (detect)"));
    for (const code of Object.keys(voices.languages || {})) lang.appendChild(option(code, code));
    lang.value = ""; // automatic detection by default; a language is the user's choice
    fillVoices();
    k.voicesLoaded = true;
    if (k.state === "idle" || k.state === "error") {
      setState("idle");
      setStatus("ready");
    }
    // The voice list is open (Open-WebUI reads it without a key): ask a keyed route whether
    // this server needs a key, so the key box shows before the first Play, not after it.
    if (!apiKey()) {
      try {
        const probe = await fetch("/v1/models");
        if (probe.status === 401) {
          showKeyBox(true);
          setStatus("this server needs an API key");
        }
      } catch (_) { /* the speech request reports unreachable servers */ }
    }
  }

  function fillVoices() {
    const sel = $("voice");
    const code = $("language").value;
    const info = code && voices.languages ? voices.languages[code] : null;
    const list = info ? info.voices : voices.voice_names || [];
    const dflt = info ? info.default_voice : null;
    sel.replaceChildren(option("", dflt ? "default (" + dflt + ")" : "default"));
    for (const v of list || []) sel.appendChild(option(v, v));
    if ((voices.aliases || []).length) {
      const group = document.createElement("optgroup");
      group.label = "OpenAI voice names";
      for (const a of voices.aliases) group.appendChild(option(a, a));
      sel.appendChild(group);
    }
  }

  // ---- playback --------------------------------------------------------------------
  function requestBody(format, streamed) {
    const body = {
      model: "tts-1",
      input: $("text").value,
      response_format: format,
      speed: parseFloat($("speed").value) || 1.0,
      seed: Math.floor(Math.random() * 2147483647),
      sample_rate: SAMPLE_RATE, // the page plays and wraps the pcm at this rate
    };
    if (streamed) body.stream_format = "audio";
    if ($("voice").value) body.voice = $("voice").value;
    if ($("language").value) body.language = $("language").value;
    return body;
  }

  function stopAudio() {
    for (const s of sources) {
      try { s.stop(); } catch (_) { /* already stopped */ }
    }
    sources = new Set();
    if (doneTimer) clearTimeout(doneTimer);
    doneTimer = null;
  }

  function stop() {
    if (controller) controller.abort();
    controller = null;
    stopAudio();
    if (k.state === "requesting" || k.state === "streaming" || k.state === "playing") {
      setState("stopped");
      setStatus("stopped");
    }
    $("play").disabled = false;
    $("stop").disabled = true;
  }

  function schedule(f32) {
    const buf = ctx.createBuffer(1, f32.length, SAMPLE_RATE);
    buf.copyToChannel(f32, 0);
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(ctx.destination);
    const now = ctx.currentTime;
    if (nextTime < now + 0.01) nextTime = now + LEAD_S; // first chunk or an underrun
    src.start(nextTime);
    nextTime += buf.duration;
    sources.add(src);
    src.onended = () => {
      sources.delete(src);
      k.samplesPlayed += f32.length;
    };
    if (k.samplesScheduled === 0) {
      k.firstScheduledWhile = k.state; // "streaming": playback began before the body ended
      k.firstScheduledAtMs = Math.round(performance.now() - k.t0);
    }
    k.samplesScheduled += f32.length;
  }

  function showReceived() {
    $("received").textContent = (k.samplesReceived / SAMPLE_RATE).toFixed(2) + " s";
  }

  async function play() {
    stop();
    const text = $("text").value;
    if (!text.trim()) return fail("type some text first");
    if (!ctx) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return fail("this browser has no Web Audio");
      ctx = new AC();
    }
    try { await ctx.resume(); } catch (_) { /* autoplay policy: plays after the click */ }
    k.runs += 1;
    k.samplesReceived = 0;
    k.samplesScheduled = 0;
    k.samplesPlayed = 0;
    k.ttfaMs = null;
    k.error = null;
    pcmParts = [];
    nextTime = 0;
    $("ttfa").textContent = "\u2013";
    $("download").hidden = true;
    showReceived();
    setState("requesting");
    setStatus("synthesizing...");
    $("play").disabled = true;
    $("stop").disabled = false;

    const body = requestBody("pcm", true);
    lastBody = body;
    const myController = new AbortController();
    controller = myController;
    const t0 = performance.now();
    k.t0 = t0;
    k.firstScheduledWhile = null;
    let resp;
    try {
      resp = await fetch("/v1/audio/speech", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
        signal: myController.signal,
      });
    } catch (e) {
      if (myController.signal.aborted) return;
      return fail("request failed: " + e.message);
    }
    k.requestId = resp.headers.get("X-Request-Id");
    if (resp.status === 401) {
      showKeyBox(true);
      return fail("this server needs a valid API key");
    }
    if (!resp.ok) return fail(await errorMessage(resp));
    const rate = parseInt(resp.headers.get("X-Sample-Rate") || SAMPLE_RATE, 10);
    if (rate !== SAMPLE_RATE) return fail("unexpected sample rate " + rate);
    $("used-voice").textContent = (resp.headers.get("X-Kanitts-Voice") || "?") + " / " +
      (resp.headers.get("X-Kanitts-Language") || "?");
    setState("streaming");
    setStatus("streaming...");

    const reader = resp.body.getReader();
    let carry = null; // odd byte left from the previous read
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!value || !value.length) continue;
        let bytes = value;
        if (carry) {
          bytes = new Uint8Array(carry.length + value.length);
          bytes.set(carry, 0);
          bytes.set(value, carry.length);
          carry = null;
        }
        const even = bytes.length & ~1;
        if (even < bytes.length) carry = bytes.slice(even);
        if (!even) continue;
        if (k.ttfaMs === null) {
          k.ttfaMs = Math.round(performance.now() - t0);
          $("ttfa").textContent = k.ttfaMs + " ms";
        }
        const chunk = bytes.slice(0, even);
        pcmParts.push(chunk);
        const view = new DataView(chunk.buffer, chunk.byteOffset, even);
        const n = even >> 1;
        const f32 = new Float32Array(n);
        for (let i = 0; i < n; i++) f32[i] = view.getInt16(2 * i, true) / 32768;
        k.samplesReceived += n;
        showReceived();
        schedule(f32);
      }
    } catch (e) {
      if (myController.signal.aborted) return;
      return fail("stream broke: " + e.message);
    }
    if (controller !== myController) return;
    controller = null;
    k.streamEndedAtMs = Math.round(performance.now() - t0);
    makeDownload();
    const left = Math.max(0, nextTime - ctx.currentTime);
    setState("playing");
    setStatus("received " + (k.samplesReceived / SAMPLE_RATE).toFixed(2) + " s; playing...");
    doneTimer = setTimeout(() => {
      setState("done");
      setStatus("done: " + (k.samplesReceived / SAMPLE_RATE).toFixed(2) + " s of audio", "done");
      $("play").disabled = false;
      $("stop").disabled = true;
    }, left * 1000 + 50);
  }

  // ---- download --------------------------------------------------------------------
  function wavBlob(parts) {
    const dataLen = parts.reduce((n, p) => n + p.length, 0);
    const header = new ArrayBuffer(44);
    const v = new DataView(header);
    const str = (off, s) => { for (let i = 0; i < s.length; i++) v.setUint8(off + i, s.charCodeAt(i)); };
    str(0, "RIFF"); v.setUint32(4, 36 + dataLen, true); str(8, "WAVE");
    str(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
    v.setUint32(24, SAMPLE_RATE, true); v.setUint32(28, SAMPLE_RATE * 2, true);
    v.setUint16(32, 2, true); v.setUint16(34, 16, true);
    str(36, "data"); v.setUint32(40, dataLen, true);
    return new Blob([header, ...parts], { type: "audio/wav" });
  }

  function makeDownload() {
    const fmt = $("format").value;
    const a = $("download");
    if (downloadUrl) URL.revokeObjectURL(downloadUrl);
    downloadUrl = null;
    if (fmt === "wav" || fmt === "pcm") {
      const blob = fmt === "wav" ? wavBlob(pcmParts) : new Blob(pcmParts, { type: "audio/pcm" });
      k.downloadBytes = blob.size;
      downloadUrl = URL.createObjectURL(blob);
      a.href = downloadUrl;
      a.download = "speech." + fmt;
      a.textContent = "Download " + fmt;
      a.dataset.remote = "";
    } else {
      // Browsers cannot encode mp3/opus/aac/flac: ask the server for the same audio
      // (same request and seed) in that format when the link is clicked.
      a.href = "#";
      a.download = "speech." + fmt;
      a.textContent = "Download " + fmt;
      a.dataset.remote = fmt;
      k.downloadBytes = null;
    }
    a.hidden = false;
  }

  async function remoteDownload(ev) {
    const a = $("download");
    const fmt = a.dataset.remote;
    if (!fmt || !lastBody) return; // local blob: the browser handles the click
    ev.preventDefault();
    const body = Object.assign({}, lastBody, { response_format: fmt });
    delete body.stream_format;
    setStatus("encoding " + fmt + "...");
    const resp = await fetch("/v1/audio/speech", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    if (!resp.ok) return fail(await errorMessage(resp));
    const url = URL.createObjectURL(await resp.blob());
    const tmp = document.createElement("a");
    tmp.href = url;
    tmp.download = "speech." + fmt;
    document.body.appendChild(tmp);
    tmp.click();
    tmp.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    setStatus("downloaded speech." + fmt, "done");
  }

  // ---- wiring ----------------------------------------------------------------------
  function init() {
    $("play").addEventListener("click", play);
    $("stop").addEventListener("click", stop);
    $("download").addEventListener("click", remoteDownload);
    $("language").addEventListener("change", () => voices && fillVoices());
    $("format").addEventListener("change", () => { if (pcmParts.length) makeDownload(); });
    $("speed").addEventListener("input", () => {
      $("speed-out").textContent = parseFloat($("speed").value).toFixed(2);
    });
    $("api-key").value = apiKey();
    $("save-key").addEventListener("click", () => {
      try { localStorage.setItem(KEY_STORE, $("api-key").value.trim()); } catch (_) { /* private mode */ }
      k.error = null;
      loadVoices();
    });
    $("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") $("save-key").click(); });
    k.play = play;
    k.stop = stop;
    loadVoices();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
