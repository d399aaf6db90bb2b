// osdface-rtc page: camera -> WebRTC -> server (enhance) -> WebRTC -> <video>.
// Controls and stats use one DataChannel ("control"); see osdface_rtc/rtc/session.py for the protocol.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  config: { ice_servers: [], codec: 'vp8', token_required: false },
  pc: null, dc: null, stream: null, timer: null,
  server: null,          // last "stats" message from the server
  hello: null,
  browser: {},           // derived from pc.getStats()
  prev: {},              // previous getStats counters (for deltas)
  statsMessages: 0,
};
window.osdface = state;  // for debugging and the browser test

function setStatus(text, cls) {
  const el = $('status');
  el.textContent = text;
  el.className = 'status ' + (cls || text);
}

function message(text) { $('message').textContent = text || ''; }

async function loadConfig() {
  try {
    const r = await fetch('/config');
    state.config = await r.json();
  } catch (e) { message('cannot reach the server: ' + e); }
  if (state.config.token_required) $('tokenLabel').hidden = false;
  if (params.get('token')) $('token').value = params.get('token');
}

async function listCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const sel = $('camera');
  const current = sel.value;
  sel.innerHTML = '<option value="">default camera</option>';
  devices.filter((d) => d.kind === 'videoinput').forEach((d, i) => {
    const o = document.createElement('option');
    o.value = d.deviceId;
    o.textContent = d.label || `camera ${i + 1}`;
    sel.appendChild(o);
  });
  sel.value = current;
}

function preferCodec(transceiver, codec) {
  if (!window.RTCRtpSender || !RTCRtpSender.getCapabilities || !transceiver.setCodecPreferences) return;
  const caps = RTCRtpSender.getCapabilities('video').codecs;
  const want = 'video/' + codec.toLowerCase();
  const first = caps.filter((c) => c.mimeType.toLowerCase() === want);
  const rest = caps.filter((c) => c.mimeType.toLowerCase() !== want);
  if (first.length) transceiver.setCodecPreferences(first.concat(rest));
}

function waitIceGathering(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    pc.addEventListener('icegatheringstatechange', check);
    setTimeout(done, timeoutMs);
  });
}

async function start() {
  message('');
  $('start').disabled = true;
  setStatus('connecting');
  try {
    const [w, h] = $('resolution').value.split('x').map(Number);
    const video = { width: { ideal: w }, height: { ideal: h }, frameRate: { ideal: 30 } };
    if ($('camera').value) video.deviceId = { exact: $('camera').value };
    state.stream = await navigator.mediaDevices.getUserMedia({ video, audio: false });
    $('local').srcObject = state.stream;
    listCameras().catch(() => {});

    const pc = state.pc = new RTCPeerConnection({ iceServers: state.config.ice_servers || [] });
    const track = state.stream.getVideoTracks()[0];
    const tr = pc.addTransceiver(track, { direction: 'sendrecv', streams: [state.stream] });
    preferCodec(tr, state.config.codec || 'vp8');
    try {  // keep the chosen size while bandwidth ramps up
      const p = tr.sender.getParameters();
      p.degradationPreference = 'maintain-resolution';
      await tr.sender.setParameters(p);
    } catch (e) { /* older browsers */ }

    pc.ontrack = (ev) => {
      $('remote').srcObject = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      setStatus(s, s === 'connected' ? 'connected' : (s === 'failed' || s === 'closed' ? 'failed' : 'connecting'));
      if (s === 'failed') message('connection failed (ICE): behind NAT? start the server with --ice-server');
    };
    const dc = state.dc = pc.createDataChannel('control');
    dc.onopen = sendConfig;
    dc.onmessage = onMessage;

    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc);
    const headers = { 'Content-Type': 'application/json' };
    const token = $('token').value;
    if (token) headers.Authorization = 'Bearer ' + token;
    const r = await fetch('/offer', {
      method: 'POST', headers,
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`server refused the call (HTTP ${r.status}): ${body.error || ''}`);
    await pc.setRemoteDescription({ sdp: body.sdp, type: body.type });
    state.timer = setInterval(pollBrowserStats, 1000);
    $('stop').disabled = false;
  } catch (e) {
    message(String(e.message || e));
    stop();
    setStatus('failed');
  }
}

function stop() {
  clearInterval(state.timer);
  state.timer = null;
  if (state.dc) try { state.dc.close(); } catch (e) { /* closed */ }
  if (state.pc) state.pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.pc = state.dc = state.stream = null;
  $('local').srcObject = null;
  $('remote').srcObject = null;
  $('start').disabled = false;
  $('stop').disabled = true;
  setStatus('idle');
  $('stats').textContent = 'not connected';
}

function sendConfig() {
  const dc = state.dc;
  if (!dc || dc.readyState !== 'open') return;
  dc.send(JSON.stringify({ type: 'config', enabled: $('enhance').checked, strength: Number($('strength').value),
    compare: splitPosition() }));
}

function onMessage(ev) {
  let msg;
  try { msg = JSON.parse(ev.data); } catch (e) { return; }
  if (msg.type === 'stats') {
    state.server = msg;
    state.statsMessages += 1;
    render();
  } else if (msg.type === 'hello') {
    state.hello = msg;
  } else if (msg.type === 'error') {
    message('server: ' + msg.message);
  }
}

function delta(key, value) {
  const prev = state.prev[key];
  state.prev[key] = value;
  return prev === undefined ? null : value - prev;
}

async function pollBrowserStats() {
  if (!state.pc) return;
  const report = await state.pc.getStats();
  const b = {};
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      b.fpsDecoded = s.framesPerSecond || 0;
      b.framesDecoded = s.framesDecoded || 0;
      const jb = delta('jbDelay', s.jitterBufferDelay || 0), jn = delta('jbCount', s.jitterBufferEmittedCount || 0);
      if (jb !== null && jn > 0) b.jitterMs = (jb / jn) * 1000;
      const dt = delta('decTime', s.totalDecodeTime || 0), dn = delta('decCount', s.framesDecoded || 0);
      if (dt !== null && dn > 0) b.decodeMs = (dt / dn) * 1000;
      b.recvSize = `${s.frameWidth || 0}x${s.frameHeight || 0}`;
    } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
      b.fpsSent = s.framesPerSecond || 0;
      const et = delta('encTime', s.totalEncodeTime || 0), en = delta('encCount', s.framesEncoded || 0);
      if (et !== null && en > 0) b.encodeMs = (et / en) * 1000;
      b.sendSize = `${s.frameWidth || 0}x${s.frameHeight || 0}`;
    } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
      if (s.currentRoundTripTime !== undefined) b.rttMs = s.currentRoundTripTime * 1000;
    }
  });
  state.browser = b;
  render();
}

function e2eEstimate() {
  const s = state.server, b = state.browser;
  if (!s) return null;
  const frame = s.fps_in > 0 ? 1000 / s.fps_in : 33;
  return (b.encodeMs || 0) + (b.rttMs || 0) + (s.latency_ms || 0) + frame + (b.jitterMs || 0) + (b.decodeMs || 0);
}

const f1 = (v) => (v === undefined || v === null || Number.isNaN(v) ? '–' : Number(v).toFixed(1));

// Freshness in plain words: how often the face is restored and how old the restoration shown is
// (the time between the frame it was made from and the frame it is shown on).
function freshnessWords(s) {
  if (s.age_p50_ms === null || s.age_p50_ms === undefined) return 'face not restored yet';
  const pct = s.fresh_share === null ? '–' : Math.round(100 * s.fresh_share);
  return `face restored ${f1(s.restores_per_s)}×/s\n` +
    `restored face shown is typically ${Math.round(s.age_p50_ms)} ms old (95%: ${Math.round(s.age_p95_ms)} ms); ` +
    `${pct}% within ${Math.round(s.fresh_ms)} ms`;
}

function render() {
  const s = state.server, b = state.browser;
  if (!s) { $('stats').textContent = 'waiting for stats…'; return; }
  const st = s.stages_ms || {};
  const stages = ['detect', 'align', 'restore', 'wait', 'blend']
    .filter((k) => st[k] !== undefined).map((k) => `${k} ${f1(st[k])}`).join('  ');
  $('stats').textContent = [
    `fps in ${f1(s.fps_in)}  out ${f1(s.fps_out)}  shown ${f1(b.fpsDecoded)}`,
    `e2e ≈ ${f1(e2eEstimate())} ms  (server ${f1(s.latency_ms)}, rtt ${f1(b.rttMs)})`,
    `stages ms: ${stages || '–'}`,
    `faces ${s.faces}   ${freshnessWords(s)}`,
    `frames sent ${s.frames_out}: restored in time ${s.enhanced}, ` +
      `last restoration moved to the face ${s.fallback_cached}, not restored ${s.fallback_original}`,
    `errors ${s.errors}  old input frames skipped ${s.frames_skipped}`,
    `${s.width}x${s.height}  ${s.enabled ? 'enhance on' : 'enhance off'}  strength ${Number(s.strength).toFixed(2)}  budget ${s.budget_ms} ms`,
  ].join('\n');
}

// Split before/after is frame-exact: the server composes it from one frame (left of the
// divider the frame as the server received it, right of it the same frame enhanced), so the
// page shows only the returned video with the divider drawn at the same position.
state.split = 0.5;
function splitPosition() { return $('view').value === 'split' ? state.split : null; }

function setView() {
  const split = $('view').value === 'split';
  $('stage').className = split ? 'split' : 'side';
  $('divider').hidden = !split;
  $('enhCaption').textContent = split ? 'before (as the server received it) | after — same frame' : 'Enhanced';
  sendConfig();
}

let splitTimer = null;
function dragSplit(ev) {
  const rect = $('remote').getBoundingClientRect();
  const x = Math.min(Math.max((ev.clientX - rect.left) / rect.width, 0.02), 0.98);
  state.split = Math.round(x * 1000) / 1000;
  $('stage').style.setProperty('--split', (x * 100).toFixed(1) + '%');
  if (!splitTimer) splitTimer = setTimeout(() => { splitTimer = null; sendConfig(); }, 80);
}

function init() {
  $('start').onclick = start;
  $('stop').onclick = stop;
  $('enhance').onchange = sendConfig;
  $('strength').oninput = () => { $('strengthValue').textContent = Number($('strength').value).toFixed(2); sendConfig(); };
  $('view').onchange = setView;
  $('stage').addEventListener('pointerdown', (ev) => {
    if ($('view').value !== 'split') return;
    dragSplit(ev);
    const move = (e) => dragSplit(e);
    const up = () => { window.removeEventListener('pointermove', move); window.removeEventListener('pointerup', up); };
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
  });
  loadConfig().then(listCameras).catch((e) => message(String(e)));
  setView();
}

init();
