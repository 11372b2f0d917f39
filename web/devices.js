// Cameras, microphones and speakers: opening them, the choices remembered between
// visits, a microphone level meter for the pre-join screen, and switching a device in
// the middle of a call without renegotiating (RTCRtpSender.replaceTrack).

const PREFS_KEY = 'switchyard.devices';

// {cameraId, micId, speakerId, joinMuted, joinCameraOff}, from the last visit.
export function loadPrefs() {
  try {
    const p = JSON.parse(localStorage.getItem(PREFS_KEY) ?? '{}');
    return typeof p === 'object' && p ? p : {};
  } catch {
    return {};
  }
}

export function savePrefs(prefs) {
  try { localStorage.setItem(PREFS_KEY, JSON.stringify(prefs)); } catch { /* private mode: not remembered */ }
}

// 640x480 keeps three simulcast layers affordable when several pages share a machine.
function constraints(kind, deviceId) {
  const pick = deviceId ? { deviceId: { exact: deviceId } } : {};
  return kind === 'video' ? { width: { ideal: 640 }, height: { ideal: 480 }, ...pick } : (deviceId ? pick : true);
}

// The camera and microphone, the remembered ones when they are still there.
export async function openStream(prefs) {
  const ask = (cameraId, micId) => navigator.mediaDevices.getUserMedia({
    audio: constraints('audio', micId), video: constraints('video', cameraId) });
  try {
    return await ask(prefs.cameraId, prefs.micId);
  } catch (err) {
    // A remembered device that is gone: fall back to the defaults once.
    if ((prefs.cameraId || prefs.micId) && ['OverconstrainedError', 'NotFoundError'].includes(err?.name)) {
      return ask(undefined, undefined);
    }
    throw err;
  }
}

// {cameras, mics, speakers}: [{deviceId, label}] each (labels appear once permission is given).
export async function listDevices() {
  const all = await navigator.mediaDevices.enumerateDevices();
  const of = (kind) => all.filter((d) => d.kind === kind && d.deviceId)
    .map((d, i) => ({ deviceId: d.deviceId, label: d.label || `${kind} ${i + 1}` }));
  return { cameras: of('videoinput'), mics: of('audioinput'), speakers: of('audiooutput') };
}

// Fills a <select> with devices, choosing `current`.
export function fillPicker(select, devices, current) {
  select.replaceChildren(...devices.map((d) => {
    const o = document.createElement('option');
    o.value = d.deviceId;
    o.textContent = d.label; // text, never HTML
    o.selected = d.deviceId === current;
    return o;
  }));
  select.disabled = devices.length < 2;
}

// Calls onLevel(0..1) about ten times a second with the microphone's loudness; returns
// a function that stops it.
export function levelMeter(stream, onLevel) {
  const track = stream.getAudioTracks()[0];
  const Ctx = window.AudioContext ?? window.webkitAudioContext;
  if (!track || !Ctx) return () => {};
  const ctx = new Ctx();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
  }, 100);
  // The pre-join page may not have had a user gesture yet: resume when it can.
  ctx.resume?.().catch(() => {});
  return () => { clearInterval(timer); ctx.close().catch(() => {}); };
}

// Swaps the `kind` track of `stream` for one from `deviceId`, in place: the sender gets
// the new track by replaceTrack (no offer, the others' decoders just see new frames),
// the old one is stopped, and the new one keeps the old one's `enabled` (mute) state.
export async function switchDevice(pc, stream, kind, deviceId) {
  const old = stream.getTracks().find((t) => t.kind === kind);
  const fresh = await navigator.mediaDevices.getUserMedia({ [kind]: constraints(kind, deviceId) });
  const track = fresh.getTracks().find((t) => t.kind === kind);
  if (old) track.enabled = old.enabled;
  // The sender carrying the old track: by kind alone, a screen share's sender could be
  // found first and the camera would replace the shared screen.
  const sender = old && pc?.getSenders().find((s) => s.track === old);
  if (sender) await sender.replaceTrack(track);
  if (old) { stream.removeTrack(old); old.stop(); }
  stream.addTrack(track);
  return track;
}

// Plays remote audio on `speakerId` where the browser can choose (setSinkId).
export function canChooseSpeaker() {
  return typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;
}
