// Offer/answer on the meeting's one RTCPeerConnection (perfect negotiation, the browser
// is the polite peer; docs/signaling.md, "Negotiation"): publishing our tracks as
// simulcast, answering the server's offers, trickle ICE, dynacast's `layers`, and the
// server's id of a received track.
//
// `s` is the connection attempt (app.js connect()): {pc, offering, negotiationNeeded,
// localCandidates, pendingCandidates, restart, isCurrent(), send(msg), sources(),
// onOfferSent()}.

// The camera is published in three simulcast layers (160x120, 320x240, 640x480 from a
// 640x480 capture); the server forwards each subscriber the one that fits its tile and
// its bandwidth, and pauses layers nobody needs (`layers`, docs/signaling.md).
// scaleResolutionDownTo (a box, either orientation) is there for Chromium: given only
// scaleResolutionDownBy it sends at most two layers of a 640x480 source (libwebrtc's
// layer limit by resolution, which it skips for explicit sizes), so 'f' would never go
// out. Where scaleResolutionDownTo is known it wins; elsewhere (Firefox) it is ignored
// and scaleResolutionDownBy applies.
const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, scaleResolutionDownTo: { maxWidth: 160, maxHeight: 120 }, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, scaleResolutionDownTo: { maxWidth: 320, maxHeight: 240 }, maxBitrate: 500000 },
  { rid: 'f', scaleResolutionDownBy: 1, scaleResolutionDownTo: { maxWidth: 640, maxHeight: 480 }, maxBitrate: 1500000 },
];
// Tests may turn simulcast off (window.SWITCHYARD_SIMULCAST = false) to compare.
const SIMULCAST = window.SWITCHYARD_SIMULCAST ?? true;

// Video goes out as simulcast layers; a browser that refuses the encodings sends one.
export function addLocalTrack(pc, track, stream) {
  const init = { direction: 'sendonly', streams: [stream] };
  if (track.kind === 'video' && SIMULCAST) {
    try {
      return pc.addTransceiver(track, { ...init,
        sendEncodings: SIMULCAST_ENCODINGS.map((e) => ({ ...e, scaleResolutionDownTo: { ...e.scaleResolutionDownTo } })) });
    } catch (err) {
      console.warn('simulcast refused; sending one layer', err);
    }
  }
  return pc.addTransceiver(track, init);
}

// Dynacast: the server says which of our layers of one track anyone receives; the others
// are paused so the browser neither encodes nor sends them. An empty list pauses all.
export async function onLayers(s, msg) {
  try {
    const active = Array.isArray(msg.active) ? msg.active : [];
    const transceiver = s.pc?.getTransceivers().find((t) => t.mid != null && t.mid === String(msg.mid));
    if (!transceiver?.sender.track) return console.warn('layers for an unknown mid', msg.mid);
    const params = transceiver.sender.getParameters();
    if (!params.encodings?.length) return;
    let changed = false;
    for (const e of params.encodings) {
      // One encoding without a rid (no simulcast): it runs while any layer is wanted.
      const want = e.rid ? active.includes(e.rid) : active.length > 0;
      if (e.active !== want) { e.active = want; changed = true; }
    }
    if (!changed) return;
    console.debug('layers', msg.mid, active.join(',') || '(none)');
    await transceiver.sender.setParameters(params);
  } catch (err) {
    console.warn('applying layers failed', msg, err);
  }
}

// Publishes (or republishes) by sending an offer, unless one is under way or the
// connection is mid-negotiation. Also called after each completed exchange: Chromium does
// not always fire negotiationneeded again after its offer was rolled back in a glare, and
// then our own tracks would never be negotiated.
export function offerIfNeeded(s) {
  const pc = s.pc;
  if (!pc || s.offering || pc.signalingState !== 'stable' || !s.isCurrent()) return;
  const restarting = s.restart && !s.restart.offered;
  if (!s.negotiationNeeded && !unpublishedLocalTracks(pc) && !restarting) return;
  s.negotiationNeeded = false;
  if (s.restart) s.restart.offered = true;
  s.offering = (async () => {
    await pc.setLocalDescription();
    const { type, sdp } = pc.localDescription;
    if (s.isCurrent()) { s.send({ type, sdp, sources: s.sources() }); s.onOfferSent(); }
  })()
    .catch((err) => console.warn('creating offer failed', err))
    .finally(() => { s.offering = null; });
}

// True while one of our own sending transceivers has not been negotiated yet.
function unpublishedLocalTracks(pc) {
  return pc.getTransceivers().some((t) => t.sender.track && !t.stopped && t.direction === 'sendonly'
    && t.currentDirection !== 'sendonly' && t.currentDirection !== 'sendrecv');
}

export async function onRemoteOffer(s, sdp) {
  await s.offering; // let an offer being made settle first, so the collision is visible
  if (s.pc.signalingState === 'have-local-offer') await firstLocalCandidate(s, 1000);
  // Polite: a colliding local offer is rolled back implicitly by setRemoteDescription.
  await s.pc.setRemoteDescription({ type: 'offer', sdp });
  await flushCandidates(s);
  await s.pc.setLocalDescription();
  s.send({ type: 'answer', sdp: s.pc.localDescription.sdp });
  offerIfNeeded(s);
}

// Chromium bug: rolling back the first offer before ICE gathering has produced a
// candidate sometimes leaves the new transport gathering forever, with no candidates
// (about 1 in 25 tries here). Waiting for the first candidate (~10 ms) avoids it.
function firstLocalCandidate(s, timeoutMs) {
  if (s.localCandidates > 0 || s.pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      s.pc.removeEventListener('icecandidate', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    s.pc.addEventListener('icecandidate', done);
  });
}

export async function onRemoteAnswer(s, sdp) {
  if (s.pc.signalingState !== 'have-local-offer') {
    return console.warn('answer ignored in state', s.pc.signalingState);
  }
  await s.pc.setRemoteDescription({ type: 'answer', sdp });
  await flushCandidates(s);
  offerIfNeeded(s);
}

export async function onRemoteCandidate(s, candidate) {
  if (!s.pc || !s.pc.remoteDescription) return void s.pendingCandidates.push(candidate);
  try { await s.pc.addIceCandidate(candidate); } catch (err) { console.warn('addIceCandidate', err); }
}

async function flushCandidates(s) {
  const queued = s.pendingCandidates.splice(0);
  for (const c of queued) await onRemoteCandidate(s, c);
}

// The server's id of a received track: the second half of the msid of its m-section in
// the current remote description (`a=msid:p3 t7`), which stays right when the server
// reuses a transceiver for another track; the track's own id otherwise.
export function serverTrackId(pc, track) {
  const mid = pc.getTransceivers().find((t) => t.receiver.track === track)?.mid;
  const sdp = pc.remoteDescription?.sdp;
  if (mid != null && sdp) {
    for (const section of sdp.split(/\r?\nm=/).slice(1)) {
      if (!new RegExp(`^a=mid:${mid.replace(/[^\w-]/g, '\\$&')}\r?$`, 'm').test(section)) continue;
      const msid = section.match(/^a=msid:\S+ (\S+?)\r?$/m);
      if (msid) return msid[1];
    }
  }
  return track.id;
}
