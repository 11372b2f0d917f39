// A connection-quality hint per received video, from getStats: packet loss over the
// last interval, jitter, and the connection's round-trip time.

// Per connection (a reconnect starts afresh rather than reading negative deltas against
// the old one's counters): inbound-rtp id -> {received, lost} at the last look.
const previousByPc = new WeakMap();

// Map of received track id -> {level: 'good'|'fair'|'poor', loss, jitterMs, rttMs}.
export async function qualityByTrack(pc) {
  const stats = await pc.getStats();
  let rttMs = null;
  stats.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime != null) rttMs = s.currentRoundTripTime * 1000;
  });
  const out = new Map();
  const previous = previousByPc.get(pc) ?? new Map();
  const seen = new Map();
  stats.forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video' || !s.trackIdentifier) return;
    const before = previous.get(s.id) ?? { received: 0, lost: 0 };
    const received = Math.max(0, (s.packetsReceived ?? 0) - before.received);
    const lost = Math.max(0, (s.packetsLost ?? 0) - before.lost);
    seen.set(s.id, { received: s.packetsReceived ?? 0, lost: s.packetsLost ?? 0 });
    const loss = received + lost > 0 ? lost / (received + lost) : 0;
    const jitterMs = (s.jitter ?? 0) * 1000;
    const bad = (limits) => loss > limits[0] || jitterMs > limits[1] || (rttMs ?? 0) > limits[2];
    const level = bad([0.1, 100, 500]) ? 'poor' : bad([0.02, 40, 250]) ? 'fair' : 'good';
    out.set(s.trackIdentifier, { level, loss, jitterMs, rttMs });
  });
  // Only the streams of this look are kept: those of removed tracks are forgotten.
  previousByPc.set(pc, seen);
  return out;
}
