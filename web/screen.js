// Screen sharing: a screen, window or tab (getDisplayMedia) published as one more video
// track on the meeting's connection, whose m-section the offer names as source "screen"
// (`sources` in the `offer` message, docs/signaling.md). The browser's own "stop
// sharing" ends the track, which unpublishes it for everyone.

// Asks the user what to share; null when they decline.
export async function pickScreen() {
  if (!navigator.mediaDevices?.getDisplayMedia) throw new Error('this browser cannot share a screen');
  try {
    return await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
  } catch (err) {
    if (err?.name === 'NotAllowedError' || err?.name === 'AbortError') return null;
    throw err;
  }
}

// Sends `track` on `pc` as a new send-only transceiver; returns it (its mid comes with
// the next offer).
export function publishScreen(pc, track, stream) {
  // Text and slides: keep detail (resolution) and let the frame rate drop instead.
  track.contentHint = 'detail';
  return pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
}

// Stops sending: the next offer marks the m-section inactive and the server unpublishes.
export function unpublishScreen(pc, transceiver) {
  try { if (pc && pc.signalingState !== 'closed') pc.removeTrack(transceiver.sender); } catch { /* closed */ }
}

// The offer's `sources`: mid -> "screen" for every screen transceiver with a mid.
export function screenSources(transceivers) {
  const out = {};
  for (const t of transceivers) if (t.mid != null && !t.stopped && t.sender.track) out[t.mid] = 'screen';
  return out;
}
