// f2f demo page: the camera is the partner, the host voice comes from server text→speech, an audio
// file or the microphone; the gateway answers with the generated host (video + audio) and a "motion"
// data channel. Plain modern JS, no build step, nothing loaded from the internet.
//
// window.f2fDebug exposes the page's state for tests and for people poking at it in devtools.

const $ = (id) => document.getElementById(id);

const debug = (window.f2fDebug = {
  state: "idle",          // idle | starting | connecting | live | stopping | failed
  sessionId: null,
  framesShown: 0,         // host frames presented by the <video> (requestVideoFrameCallback)
  framesDecoded: 0,       // host frames decoded (getStats inbound-rtp), a fallback figure
  motionMessages: 0,      // messages received on the "motion" data channel
  lastMotion: null,
  events: 0,              // messages received on the events WebSocket
  lastEvent: null,
  serverStats: null,      // the last stats object (WebSocket or GET /v1/sessions/{id})
  fps: 0,                 // frames presented per second, last second
  firstFrameMs: null,     // Start pressed → first host frame presented
  partnerVisible: null,   // the last motion message's source.partner_visible (the server sees a face)
  // Figures in ms (exponential moving averages), as the overlay shows them:
  //   voiceToMotionMs  host audio leaving this page → the motion message of the frame made from it arriving
  //   voiceToShownMs   voiceToMotionMs + playoutMs: host audio leaving this page → its frame on screen
  //   playoutMs        last packet of a host frame received → frame displayed (jitter buffer, decode, render)
  //   networkRttMs     ICE candidate-pair round trip
  latency: {},
  serverStages: null,     // ms per stage, gateway-wide over the last poll of /metrics
  lastError: null,
});

let session = null; // the live session; null when idle

// ---------------------------------------------------------------- small helpers

function setState(state, text) {
  debug.state = state;
  $("status").textContent = text ?? state[0].toUpperCase() + state.slice(1);
  const busy = state === "starting" || state === "connecting" || state === "live" || state === "stopping";
  $("start").disabled = busy;
  $("stop").disabled = !busy || state === "stopping";
  for (const id of ["audio-source", "audio-file", "audio-loop", "use-camera", "output-size", "video-codec", "token"]) {
    $(id).disabled = busy;
  }
  $("say-fieldset").disabled = !(state === "live" && $("audio-source").value === "tts");
}

function showError(message) {
  debug.lastError = message;
  const area = $("error");
  area.textContent = message;
  area.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function authHeaders(extra = {}) {
  const token = session?.token ?? $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { error: text.slice(0, 300) }; }
  }
  if (!response.ok) {
    const reason = data?.error ?? data?.detail ?? response.statusText;
    const error = new Error(`${method} ${path}: ${response.status} ${typeof reason === "string" ? reason : JSON.stringify(reason)}`);
    error.status = response.status;
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return data;
}

function ms(value) {
  return Number.isFinite(value) ? `${Math.round(value)} ms` : "–";
}

function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

// ---------------------------------------------------------------- host audio sources

async function hostAudioTrack(kind, s) {
  if (kind === "mic") {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false },
    });
    s.localStreams.push(stream);
    return stream.getAudioTracks()[0];
  }
  if (kind === "file") {
    const file = $("audio-file").files[0];
    if (!file) throw new Error("Choose an audio file first (or pick another host audio source).");
    const context = new AudioContext({ sampleRate: 48000 });
    s.audioContext = context;
    let buffer;
    try {
      buffer = await context.decodeAudioData(await file.arrayBuffer());
    } catch (e) {
      throw new Error(`Could not decode ${file.name}: ${e.message || e}`);
    }
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.loop = $("audio-loop").checked;
    const destination = context.createMediaStreamDestination();
    source.connect(destination); // not to context.destination: the host's voice comes back from the server
    s.startFileAudio = () => { source.start(); context.resume(); };
    return destination.stream.getAudioTracks()[0];
  }
  return null; // "tts": the server speaks; we only receive audio
}

// ---------------------------------------------------------------- session lifecycle

async function start() {
  clearError();
  const s = (session = {
    id: null, pc: null, dc: null, ws: null, token: $("token").value.trim(), localStreams: [],
    audioContext: null, startFileAudio: null, timers: [], clickedAt: performance.now(), closed: false,
  });
  resetFigures();
  setState("starting", "Starting…");
  try {
    const pc = (s.pc = new RTCPeerConnection({ iceServers: await iceServers() }));

    // Partner video: the camera. Without it the host just listens, which is not an error.
    let camera = null;
    if ($("use-camera").checked) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({
          video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 25 } },
        });
        s.localStreams.push(stream);
        camera = stream.getVideoTracks()[0];
        $("partner-preview").srcObject = stream;
        $("self-view").hidden = false;
      } catch (e) {
        showError(`Camera unavailable (${e.name || e}); going on without partner video.`);
      }
    }
    const microphone = await hostAudioTrack($("audio-source").value, s);
    if (s.closed) return;

    const video = pc.addTransceiver(camera ?? "video", { direction: camera ? "sendrecv" : "recvonly" });
    pc.addTransceiver(microphone ?? "audio", { direction: microphone ? "sendrecv" : "recvonly" });
    preferCodec(video, $("video-codec").value);

    // The motion channel must exist before the offer so the offer carries an SCTP section.
    s.dc = pc.createDataChannel("motion");
    s.dc.onmessage = (event) => onMotion(s, event.data, performance.now());

    const remote = new MediaStream();
    pc.ontrack = (event) => {
      remote.addTrack(event.track);
      const host = $("host-video");
      if (host.srcObject !== remote) host.srcObject = remote;
      if (event.track.kind === "video") watchFrames(host, s);
    };
    pc.onconnectionstatechange = () => onConnectionState(s);

    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc, 3000);
    if (s.closed) return;

    setState("connecting", "Connecting…");
    const request = { sdp: pc.localDescription.sdp, type: "offer", lambda_video: Number($("lambda").value) };
    if ($("output-size").value) request.output_size = Number($("output-size").value);
    if ($("video-codec").value) request.video_codec = $("video-codec").value;
    const answer = await api("POST", "v1/sessions", request);
    s.id = debug.sessionId = answer.session_id;
    if (s.closed) { await deleteSession(s); return; }
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });

    openEvents(s);
    s.timers.push(setInterval(() => pollStats(s), 1000));
    s.timers.push(setInterval(() => pollStages(s), 2000));
    pollStages(s);
  } catch (e) {
    const message = e.status === 401 ? `Access token rejected. ${e.message}`
      : e.status === 503 ? `The server is full${e.retryAfter ? `; retry in ${e.retryAfter} s` : ""}. ${e.message}`
      : e.name === "NotAllowedError" ? `Permission denied: ${e.message}`
      : (e.message || String(e));
    showError(message);
    await stop(s, "failed");
  }
}

async function iceServers() {
  // The gateway says which STUN/TURN servers to use; none (host candidates only) if it cannot.
  try {
    return (await api("GET", "v1/ice-servers"))?.iceServers ?? [];
  } catch (e) {
    if (e.status === 401) throw e;
    return [];
  }
}

function preferCodec(transceiver, codec) {
  if (!codec || !transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const codecs = RTCRtpReceiver.getCapabilities("video")?.codecs ?? [];
  const wanted = `video/${codec}`.toLowerCase();
  const first = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (first.length) transceiver.setCodecPreferences([...first, ...codecs.filter((c) => !first.includes(c))]);
}

function iceGatheringComplete(pc, timeoutMs) {
  // The API takes one offer with all candidates (no trickle), so wait for gathering to finish.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function onConnectionState(s) {
  if (s !== session) return;
  const state = s.pc.connectionState;
  if (state === "connected") {
    s.connectedAt ??= performance.now(); // ≈ zero of the server's session clock (it starts on "connected")
    setState("live", "Live");
    s.startFileAudio?.();
    s.startFileAudio = null;
  } else if (state === "failed") {
    showError("The connection failed (ICE/DTLS). Check the network path to the server.");
    stop(s, "failed");
  } else if (state === "disconnected") {
    $("status").textContent = "Connection interrupted, waiting…";
  }
}

async function deleteSession(s) {
  if (!s.id) return;
  try { await api("DELETE", `v1/sessions/${encodeURIComponent(s.id)}`); } catch { /* already gone */ }
}

async function stop(s = session, finalState = "idle") {
  if (!s || s.closed) return;
  s.closed = true;
  if (finalState === "idle") setState("stopping", "Stopping…");
  for (const timer of s.timers) clearInterval(timer);
  try { s.ws?.close(); } catch { /* ignore */ }
  try { s.dc?.close(); } catch { /* ignore */ }
  await deleteSession(s);
  try { s.pc?.close(); } catch { /* ignore */ }
  for (const stream of s.localStreams) stream.getTracks().forEach((t) => t.stop());
  try { await s.audioContext?.close(); } catch { /* ignore */ }
  $("partner-preview").srcObject = null;
  $("self-view").hidden = true;
  $("host-video").srcObject = null;
  $("placeholder").hidden = false;
  if (session === s) session = null;
  setState(finalState, finalState === "failed" ? "Failed" : "Idle");
}

// ---------------------------------------------------------------- figures

function resetFigures() {
  Object.assign(debug, {
    sessionId: null, framesShown: 0, framesDecoded: 0, motionMessages: 0, lastMotion: null, events: 0,
    lastEvent: null, serverStats: null, fps: 0, firstFrameMs: null, partnerVisible: null, latency: {},
    serverStages: null, lastError: null,
  });
  for (const element of document.querySelectorAll("#overlay dd")) element.textContent = "–";
  $("stats").textContent = "–";
}

// Count presented frames and the receive→display delay with requestVideoFrameCallback.
function watchFrames(video, s) {
  if (s.watching) return;
  s.watching = true;
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return; // getStats covers it
  const times = []; // [presentation time, frames] over the last second
  let lastPresented = null;
  const onFrame = (now, meta) => {
    if (s.closed) return;
    const frames = lastPresented === null ? 1 : Math.max(1, meta.presentedFrames - lastPresented);
    lastPresented = meta.presentedFrames;
    debug.framesShown += frames;
    if (debug.firstFrameMs === null) {
      debug.firstFrameMs = performance.now() - s.clickedAt;
      $("placeholder").hidden = true;
    }
    times.push([now, frames]);
    while (times.length > 2 && now - times[0][0] > 1000) times.shift();
    if (times.length > 1) {
      const count = times.slice(1).reduce((sum, [, n]) => sum + n, 0);
      debug.fps = (count * 1000) / Math.max(1, now - times[0][0]);
    }
    if (typeof meta.receiveTime === "number" && meta.receiveTime > 0) {
      smooth("playoutMs", meta.expectedDisplayTime - meta.receiveTime);
    }
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function smooth(key, value, alpha = 0.1) {
  if (!Number.isFinite(value)) return;
  const old = debug.latency[key];
  debug.latency[key] = old === undefined ? value : old + alpha * (value - old);
}

// A motion message for frame n has pts = n / 25 s on the session clock, whose zero is the moment the
// server saw the connection come up (≈ our "connected"). The host audio of frame n reached the server
// at that session time (the gateway places input audio on its timeline by arrival). So
//   arrival - (connectedAt + pts) + RTT/2
// is the time from that audio leaving this page to the frame's motion message arriving here: the
// look-ahead wait, the engine step and the way back. The anchor is uncertain by about RTT/2.
function onMotion(s, data, arrivedAt) {
  if (s.closed) return;
  let message;
  try { message = JSON.parse(data); } catch { return; }
  debug.motionMessages += 1;
  debug.lastMotion = message;
  debug.partnerVisible = message.source?.partner_visible ?? null;
  const pts = num(message.pts);
  if (pts !== null && num(message.source?.host_audio_pts) !== null && s.connectedAt !== undefined) {
    smooth("voiceToMotionMs", arrivedAt - (s.connectedAt + pts * 1000) + (debug.latency.networkRttMs ?? 0) / 2);
    if (debug.latency.playoutMs !== undefined) {
      debug.latency.voiceToShownMs = debug.latency.voiceToMotionMs + debug.latency.playoutMs;
    }
  }
}

function openEvents(s) {
  const url = new URL(`v1/sessions/${encodeURIComponent(s.id)}/events`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (s.token) url.searchParams.set("token", s.token); // browsers cannot set headers on a WebSocket
  let ws;
  try { ws = s.ws = new WebSocket(url); } catch { return; }
  ws.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    debug.events += 1;
    debug.lastEvent = message;
    if (message.type === "stats") {
      debug.serverStats = message;
      s.statsFromEvents = performance.now();
    } else if (message.type === "error") {
      showError(`Server${message.fatal ? " (fatal)" : ""}: ${message.error}`);
    } else if (message.type === "closed" && !s.closed) {
      s.id = null; // already gone on the server
      showError(`The server ended the session (${message.reason}).`);
      stop(s, "failed");
    }
  };
  ws.onclose = () => { if (s.ws === ws) s.ws = null; };
}

async function pollStats(s) {
  if (s.closed || !s.pc) return;
  // Browser-side figures from getStats: frames decoded (when rVFC is missing) and network round trip.
  try {
    const report = await s.pc.getStats();
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") debug.framesDecoded = r.framesDecoded ?? 0;
      if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded" && r.currentRoundTripTime !== undefined) {
        debug.latency.networkRttMs = r.currentRoundTripTime * 1000;
      }
    });
  } catch { /* closed meanwhile */ }
  // Server stats: from the events WebSocket when it talks, else poll GET /v1/sessions/{id}.
  if (s.id && !(s.statsFromEvents && performance.now() - s.statsFromEvents < 2500)) {
    try { debug.serverStats = await api("GET", `v1/sessions/${encodeURIComponent(s.id)}`); } catch { /* ignore */ }
  }
  render();
}

// Per-stage times: the gateway's Prometheus histogram f2f_stage_seconds{stage=...}, as the mean over
// the last poll interval. They cover every session of the gateway, not just this one.
async function pollStages(s) {
  let text;
  try {
    const response = await fetch("metrics");
    if (!response.ok) return;
    text = await response.text();
  } catch { return; }
  const sums = {};
  const counts = {};
  for (const line of text.split("\n")) {
    const match = /^f2f_stage_seconds_(sum|count)\{stage="([^"]+)"\} (\S+)/.exec(line);
    if (match) (match[1] === "sum" ? sums : counts)[match[2]] = Number(match[3]);
  }
  const previous = s.stageTotals;
  s.stageTotals = { sums, counts };
  if (!previous) return;
  const stages = {};
  for (const [stage, count] of Object.entries(counts)) {
    const n = count - (previous.counts[stage] ?? 0);
    if (n > 0) stages[stage] = ((sums[stage] - (previous.sums[stage] ?? 0)) / n) * 1000;
  }
  debug.serverStages = stages;
}

function stagesText(stages) {
  if (!stages || !Object.keys(stages).length) return "–";
  return Object.entries(stages).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(" · ") + " ms";
}

function render() {
  const l = debug.latency;
  const stats = debug.serverStats;
  $("ov-fps").textContent = debug.framesShown ? `${debug.fps.toFixed(1)} (${debug.framesShown})` : "–";
  $("ov-server-fps").textContent = num(stats?.fps) !== null ? stats.fps.toFixed(1) : "–";
  $("ov-voice-motion").textContent = ms(l.voiceToMotionMs);
  $("ov-voice-shown").textContent = ms(l.voiceToShownMs);
  $("ov-playout").textContent = ms(l.playoutMs);
  $("ov-rtt").textContent = l.networkRttMs !== undefined ? `${l.networkRttMs.toFixed(1)} ms` : "–";
  $("ov-step").textContent = num(stats?.step_ms_mean) !== null
    ? `${stats.step_ms_mean.toFixed(1)} ms${num(stats.late_ms_max) !== null ? ` (late ≤ ${Math.round(stats.late_ms_max)})` : ""}`
    : "–";
  $("ov-face").textContent = debug.partnerVisible === null ? "–" : debug.partnerVisible ? "seen" : "not seen";
  $("ov-lambda").textContent = num(debug.lastMotion?.lambda_video) !== null ? debug.lastMotion.lambda_video.toFixed(1) : "–";
  $("stats").textContent = JSON.stringify({
    session: debug.sessionId, state: debug.state, frames_shown: debug.framesShown,
    frames_decoded: debug.framesDecoded, motion_messages: debug.motionMessages,
    first_frame_ms: debug.firstFrameMs && Math.round(debug.firstFrameMs),
    latency_ms: Object.fromEntries(Object.entries(l).map(([k, v]) => [k, Math.round(v * 10) / 10])),
    server_stages_ms_all_sessions: stagesText(debug.serverStages), server: stats,
  }, null, 2);
}

// ---------------------------------------------------------------- controls

let lambdaTimer = null;
function onLambda() {
  const value = Number($("lambda").value);
  $("lambda-value").textContent = value.toFixed(1);
  clearTimeout(lambdaTimer);
  lambdaTimer = setTimeout(async () => {
    const s = session;
    if (!s?.id || s.closed) return;
    try { await api("PATCH", `v1/sessions/${encodeURIComponent(s.id)}`, { lambda_video: value }); }
    catch (e) { showError(e.message); }
  }, 150);
}

async function say(event) {
  event.preventDefault();
  const s = session;
  const text = $("say-text").value.trim();
  if (!s?.id || !text) return;
  $("say").disabled = true;
  try { await api("POST", `v1/sessions/${encodeURIComponent(s.id)}/say`, { text }); }
  catch (e) { showError(e.message); }
  finally { $("say").disabled = false; }
}

function init() {
  $("session-form").addEventListener("submit", (event) => { event.preventDefault(); start(); });
  $("stop").addEventListener("click", () => stop());
  $("lambda").addEventListener("input", onLambda);
  $("say-form").addEventListener("submit", say);
  $("audio-source").addEventListener("change", () => {
    $("file-row").hidden = $("audio-source").value !== "file";
  });
  window.addEventListener("pagehide", () => { if (session?.id) {
    // Best effort: tell the server the session is over when the tab goes away.
    fetch(`v1/sessions/${encodeURIComponent(session.id)}`, { method: "DELETE", headers: authHeaders(), keepalive: true });
  } });
  setInterval(() => { if (session) render(); }, 500);
  debug.start = start; // for tests and devtools
  debug.stop = () => stop();
  setState("idle", "Idle");
}

init();
