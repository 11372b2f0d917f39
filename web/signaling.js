// The signaling WebSocket (docs/signaling.md): JSON both ways, the server's messages
// handled strictly one after another in arrival order (SDP and ICE candidates depend on
// each other), and a deadline for opening.

const OPEN_TIMEOUT_MS = 10000;

// This page's server's WebSocket; tests point the client at a dead port with
// window.SWITCHYARD_WS_URL.
export function signalingUrl() {
  if (window.SWITCHYARD_WS_URL) return window.SWITCHYARD_WS_URL;
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
}

// `onMessage(msg)` may return a promise: the next message waits for it. `onClose(opened)`
// runs once, when the socket closes or could not open in time.
export function openSignaling(url, { onOpen, onMessage, onClose }) {
  const ws = new WebSocket(url);
  let opened = false;
  let chain = Promise.resolve();
  const openTimer = setTimeout(() => ws.readyState !== WebSocket.OPEN && ws.close(), OPEN_TIMEOUT_MS);
  ws.onopen = () => {
    clearTimeout(openTimer);
    opened = true;
    onOpen();
  };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return console.warn('non-JSON from server', ev.data); }
    chain = chain.then(() => onMessage(msg)).catch((err) => console.warn(`handling ${msg?.type} failed`, err));
  };
  ws.onclose = () => {
    clearTimeout(openTimer);
    onClose(opened);
  };
  return {
    get open() { return ws.readyState === WebSocket.OPEN; },
    send(msg) { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); },
    close() { try { ws.close(); } catch { /* already closed */ } },
  };
}
