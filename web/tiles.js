// Video tiles: a participant's (or a shared screen's) <video> with its name, avatar,
// microphone state and size button, and the grid's column count. Names are set as text.

const MIC_OFF_SVG = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11z"/><path d="M3 3l18 18" stroke="currentColor" stroke-width="2.2"/></svg>';

// `sinkId`: the speaker to play a remote tile's sound on, where the page may choose.
export function makeTile(name, kind, sinkId = null) {
  const el = document.createElement('div');
  el.className = `tile ${kind}`;
  el.dataset.audioMuted = 'false';
  el.dataset.videoMuted = 'false';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  if (kind === 'remote' && sinkId && typeof video.setSinkId === 'function') video.setSinkId(sinkId).catch(() => {});
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  const caption = document.createElement('span');
  caption.textContent = 'camera off';
  placeholder.append(avatar, caption);
  const label = document.createElement('div');
  label.className = 'label';
  const mic = document.createElement('span');
  mic.className = 'mic-off';
  mic.title = 'Microphone muted';
  mic.innerHTML = `${MIC_OFF_SVG}<span class="sr">muted</span>`;
  const nameEl = document.createElement('span');
  nameEl.className = 'name';
  label.append(mic, nameEl);
  el.append(video, placeholder, label);
  setTileName(el, name);
  return { el, video };
}

export function setTileName(el, name) {
  el.querySelector('.name').textContent = name;
  el.querySelector('.avatar').textContent = (name.trim()[0] ?? '?').toUpperCase();
}

export function setTileMuted(el, kind, muted) {
  if (!el) return;
  if (kind === 'audio') el.dataset.audioMuted = String(!!muted);
  if (kind === 'video') el.dataset.videoMuted = String(!!muted);
}

const MINIMIZE_SVG = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M5 17h14" stroke="currentColor" stroke-width="2.2"/></svg>';
const RESTORE_SVG = '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="5" y="6" width="14" height="12" rx="1.5" fill="none" stroke="currentColor" stroke-width="2"/></svg>';

export function showSizeButton(button, small) {
  button.setAttribute('aria-pressed', String(small));
  button.title = small ? 'Restore' : 'Minimize';
  button.setAttribute('aria-label', button.title);
  button.innerHTML = small ? RESTORE_SVG : MINIMIZE_SVG;
}

// Pick the column count that gives the biggest 16:9 tiles in the grid's current box,
// so a phone in portrait stacks tiles and a wide window lays them side by side.
export function fitGrid(grid) {
  const n = Math.max(1, grid.children.length);
  const w = grid.clientWidth || 16;
  const h = grid.clientHeight || 9;
  let best = { cols: 1, rows: n, size: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const size = Math.min(w / cols, (h / rows) * 16 / 9);
    if (size > best.size) best = { cols, rows, size };
  }
  grid.style.setProperty('--cols', String(best.cols));
  grid.style.setProperty('--rows', String(best.rows));
}
