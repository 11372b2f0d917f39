// Switchyard web client. Protocol: docs/signaling.md. One WebSocket + one
// RTCPeerConnection per "session"; a reconnect throws both away and joins again, so
// no state from a broken connection can leak into the next one.

import {
  canChooseSpeaker, fillPicker, levelMeter, listDevices, loadPrefs, openStream, savePrefs, switchDevice,
} from './devices.js';
import { CHAT_LABEL, createChat } from './chat.js';
import { applyLayout, spotlightOf } from './layout.js';
import { inviteLink, renderPeople } from './people.js';
import { qualityByTrack } from './quality.js';
import {
  addLocalTrack, offerIfNeeded, onLayers, onRemoteAnswer, onRemoteCandidate, onRemoteOffer, serverTrackId,
} from './negotiation.js';
import { pickScreen, publishScreen, screenSources, unpublishScreen } from './screen.js';
import { openSignaling, signalingUrl } from './signaling.js';
import { fitGrid, makeTile, setTileMuted, setTileName, showSizeButton } from './tiles.js';

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
const NAME_MAX = 64;
// Tests may shorten the backoff (window.SWITCHYARD_RETRY_DELAYS_MS) to see "failed" quickly.
const RETRY_DELAYS_MS = window.SWITCHYARD_RETRY_DELAYS_MS ?? [1000, 2000, 4000, 8000, 8000];
// A media connection that is not up by then is given up and the meeting joined again.
const PC_CONNECT_TIMEOUT_MS = 15000;
// A connection that went 'disconnected' gets this long to come back by itself before an
// ICE restart; a restart that has not reconnected by the timeout ends in a full rejoin.
const DISCONNECTED_GRACE_MS = window.SWITCHYARD_DISCONNECTED_GRACE_MS ?? 2000;
const ICE_RESTART_TIMEOUT_MS = 15000;
// `?relay=1`: media only through the TURN servers the server hands out (to check a TURN
// deployment, or to see what a user behind a UDP-blocking firewall gets).
const FORCE_RELAY = new URLSearchParams(location.search).get('relay') === '1';
// `view` messages go out at most this often (only the tiles whose size or visibility changed).
const VIEW_INTERVAL_MS = 250;
const SPEAKER_HISTORY_MAX = 500;
const MSG = {
  denied: 'Camera/microphone permission was denied. Allow access to the camera and microphone for this site, then join again.',
  noDevice: 'No camera or microphone was found. Connect one and join again.',
  busy: 'The camera or microphone is in use by another application.',
  insecure: 'Camera and microphone need a secure page (https:// or localhost).',
  unreachable: 'Cannot reach the server',
  left: 'You left the meeting',
};

const $ = (id) => document.getElementById(id);
const ui = {
  joinView: $('join-view'), form: $('join-form'), room: $('room-input'), name: $('name-input'),
  formError: $('form-error'), meetingView: $('meeting-view'), grid: $('grid'),
  notice: $('notice'), serverError: $('server-error'), serverErrorText: $('server-error-text'),
  connState: $('conn-state'), roomLabel: $('room-label'),
  mic: $('mic-button'), cam: $('cam-button'), sound: $('sound-button'), leave: $('leave-button'),
  preview: $('preview'), micLevel: $('mic-level'), prejoinCamera: $('prejoin-camera'), prejoinMic: $('prejoin-mic'),
  prejoinSpeaker: $('prejoin-speaker'), prejoinSpeakerLabel: $('prejoin-speaker-label'),
  joinMuted: $('join-muted'), joinCameraOff: $('join-camera-off'),
  cameraSelect: $('camera-select'), micSelect: $('mic-select'),
  layoutButton: $('layout-button'), peopleButton: $('people-button'), inviteButton: $('invite-button'),
  people: $('people'), peopleList: $('people-list'), screenButton: $('screen-button'),
};
const chat = createChat({ panel: $('chat'), list: $('chat-list'), form: $('chat-form'), input: $('chat-input'),
  button: $('chat-button'), badge: $('chat-badge'), error: $('chat-error') });

let layoutMode = 'grid'; // or 'speaker'
// How often each received video's connection-quality hint is refreshed.
const QUALITY_INTERVAL_MS = 2000;

// The devices chosen last time, and how to join (muted, camera off).
const prefs = loadPrefs();
let preview = null; // the pre-join screen's {stream, stopMeter} while it shows
let previewGeneration = 0; // a newer startPreview (or a join) makes an older one give up
let offersSent = 0; // for tests: switching a device must not renegotiate
let joinsSent = 0; // for tests: an ICE restart must not join again
const iceRestarts = []; // for tests and the curious: {ms} from restart to connected, each time

let localStream = null;
let meeting = null; // from Join until Leave / final failure: {room, name, audioMuted, videoMuted, attempt, retryTimer}
let session = null; // the current ws + pc pair (see connect())
let connState = 'connecting';
const tiles = new Map(); // participant id -> remote tile {id, el, video, stream, tracks, unpublished, visible, fixedSize}
const screens = new Map(); // server track id -> a remote screen share's tile {trackId, participantId, el, video, track, visible}
const trackSources = new Map(); // server track id -> "camera" | "microphone" | "screen" (joined, track_published)
let speakers = []; // the last `speakers` list: participant ids, dominant first
const speakerHistory = []; // the last SPEAKER_HISTORY_MAX lists with their arrival time (for tests)
const recentSpeakers = []; // participant ids, the latest dominant speaker first (grid order)

// ---------- page chrome ----------

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

function showServerError(code, message) {
  ui.serverErrorText.textContent = `${code}: ${message}`;
  ui.serverError.hidden = false;
}

function setConnState(state) {
  connState = state;
  delete ui.connState.dataset.path; // showMediaPath sets it again once connected
  ui.connState.textContent = state;
  ui.connState.dataset.state = state;
  ui.connState.hidden = false;
}

// Which way the media goes, from the selected candidate pair: "udp" straight to the
// server, "tcp" (ICE-TCP), or "relay" (through a TURN server). Shown beside the
// connection state, and kept in its data-path for tests.
async function showMediaPath(s, pc) {
  let path = null;
  try {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId); });
    // Firefox has no selectedCandidatePairId: it marks the pair `selected`.
    if (!pair) stats.forEach((r) => { if (r.type === 'candidate-pair' && (r.selected || (r.nominated && r.state === 'succeeded'))) pair = r; });
    const local = pair && stats.get(pair.localCandidateId);
    if (local) path = local.candidateType === 'relay' ? 'relay' : (local.protocol === 'tcp' ? 'tcp' : 'udp');
  } catch { /* the connection closed meanwhile */ }
  if (!path || s !== session || connState !== 'connected') return;
  ui.connState.dataset.path = path;
  ui.connState.textContent = path === 'udp' ? 'connected' : `connected (${path})`;
}

function showForm() {
  ui.meetingView.hidden = true;
  ui.joinView.hidden = false;
  ui.roomLabel.textContent = '';
  startPreview();
}

function validate(room, name) {
  if (!ROOM_RE.test(room)) return 'Room: 1-64 characters, letters, digits, "_" or "-".';
  // Counted in characters (code points), as the server counts them: `length` counts
  // UTF-16 units, so an emoji would count twice.
  const chars = [...name].length;
  if (chars < 1 || chars > NAME_MAX) return 'Display name: 1-64 characters.';
  return null;
}

// ---------- joining ----------

// `token`: an access token from a join link (the server checks it; the room and name
// shown here are read from it).
// `publish`: false for a token that may only watch and listen: no camera or microphone
// is opened, and their controls are hidden.
async function startMeeting(room, name, token = null, { publish = true } = {}) {
  showNotice('');
  ui.serverError.hidden = true;
  ui.formError.hidden = true;
  // The pre-join preview's stream becomes the meeting's (no second camera prompt).
  localStream = publish ? preview?.stream ?? await getLocalMedia() : new MediaStream();
  stopPreview(!publish);
  if (!localStream) return; // getLocalMedia already said why
  for (const el of [ui.mic, ui.cam, ui.cameraSelect, ui.micSelect]) el.hidden = !publish;
  meeting = { room, name, token, audioMuted: !publish || !!prefs.joinMuted, videoMuted: !publish || !!prefs.joinCameraOff,
    attempt: 0, retryTimer: null };
  for (const t of localStream.getTracks()) t.enabled = !(t.kind === 'audio' ? meeting.audioMuted : meeting.videoMuted);
  fillMeetingPickers();
  ui.inviteButton.hidden = !!token; // a token joins one person: an invite needs a token of its own
  ui.joinView.hidden = true;
  ui.meetingView.hidden = false;
  ui.roomLabel.textContent = room;
  ui.grid.replaceChildren(makeLocalTile(name));
  updateGrid();
  updateControls();
  connect();
}

async function getLocalMedia() {
  if (!navigator.mediaDevices?.getUserMedia) return showNotice(MSG.insecure), null;
  try {
    return await openStream(prefs);
  } catch (err) {
    console.warn('getUserMedia failed', err);
    const byName = { NotAllowedError: MSG.denied, SecurityError: MSG.denied, NotFoundError: MSG.noDevice,
      OverconstrainedError: MSG.noDevice, NotReadableError: MSG.busy };
    showNotice(byName[err?.name] ?? `Could not open the camera/microphone: ${err?.message ?? err}`);
    return null;
  }
}

// One connection attempt. Every callback checks `s === session` so events from a
// torn-down attempt are ignored.
function connect() {
  const s = { signaling: null, pc: null, closing: false, joined: false,
    offering: null, negotiationNeeded: false, localCandidates: 0, pendingCandidates: [], connectTimer: null,
    views: new Map(), viewTimer: null, lastViewFlush: 0 };
  // What negotiation.js needs of the meeting.
  s.isCurrent = () => s === session;
  s.send = (msg) => send(s, msg);
  s.sources = () => screenSources(meeting?.screen?.transceiver ? [meeting.screen.transceiver] : []);
  s.onOfferSent = () => { offersSent++; };
  session = s;
  setConnState(meeting.attempt === 0 ? 'connecting' : 'reconnecting');
  // A cluster node that does not host the room sends `moved`: this attempt goes there.
  const url = meeting.movedTo ?? signalingUrl();
  s.signaling = openSignaling(url, {
    onOpen() {
      send(s, { type: 'join', room: meeting.room, name: meeting.name, ...(meeting.token ? { token: meeting.token } : {}) });
      joinsSent++;
    },
    onMessage: (msg) => s === session && handleMessage(s, msg),
    onClose(opened) {
      if (s.closing || s !== session) return;
      if (!opened) showNotice(`${MSG.unreachable} (${url}). Retrying…`);
      connectionLost(s, opened ? undefined : url);
    },
  });
}

function send(s, msg) {
  s.signaling.send(msg);
}

async function handleMessage(s, msg) {
  switch (msg.type) {
    case 'joined': return onJoined(s, msg);
    case 'offer': console.debug('server offer in', s.pc?.signalingState); return onRemoteOffer(s, msg.sdp);
    case 'answer': console.debug('server answer in', s.pc?.signalingState); return onRemoteAnswer(s, msg.sdp);
    case 'candidate': return onRemoteCandidate(s, msg.candidate);
    case 'resync': return onResync(msg);
    case 'participant_joined': return ensureRemoteTile(msg.participant);
    case 'participant_left': return removeRemoteTile(msg.participant_id);
    case 'track_published': return void noteTrack(msg.track);
    case 'track_unpublished': return onTrackUnpublished(msg.participant_id, msg.track_id);
    case 'mute':
      if (msg.participant_id === meeting.participantId) return onMutedByServer(msg.kind, msg.muted);
      setTileMuted(tiles.get(msg.participant_id)?.el, msg.kind, msg.muted);
      return refreshRoomViews();
    case 'error': return onServerError(s, msg);
    case 'layers': return onLayers(s, msg);
    case 'speakers': return onSpeakers(msg.participant_ids);
    case 'removed': return onRemoved(msg.reason);
    case 'moved': return onMoved(s, msg);
    case 'left': return; // acks our leave
    default: console.warn('unknown message', msg); // a newer server: ignore what we do not know
  }
}

function onServerError(s, msg) {
  if (msg.code === 'chat_refused') return chat.showError(msg.message); // shown where it was typed
  // Sharing refused, or no longer allowed: the share ends here too.
  if (msg.code === 'forbidden' && /\(screen\)/.test(msg.message ?? '')) stopScreenShare();
  showServerError(msg.code, msg.message);
  if (s.joined) return;
  // A refused join (name taken, room full, bad name) will not get better by retrying.
  const m = meeting;
  endMeeting();
  setConnState('failed');
  showForm();
  if (m) { ui.room.value = m.room; ui.name.value = m.name; }
}

function onJoined(s, msg) {
  s.joined = true;
  meeting.moves = 0;
  meeting.participantId = msg.participant_id;
  const local = ui.grid.querySelector('.tile.local');
  if (local) local.dataset.participantId = msg.participant_id;
  showNotice('');
  for (const p of msg.participants) ensureRemoteTile(p);
  for (const t of msg.tracks ?? []) noteTrack(t);
  s.pc = createPeerConnection(s, msg.ice_servers ?? []);
  s.connectTimer = setTimeout(() => {
    if (s.pc.connectionState === 'connected') return;
    console.warn('media connection not up in time; joining again');
    connectionLost(s);
  }, PC_CONNECT_TIMEOUT_MS);
  // The server only knows mute state from messages; after a reconnect it starts fresh.
  if (meeting.audioMuted) send(s, { type: 'mute', kind: 'audio', muted: true });
  if (meeting.videoMuted) send(s, { type: 'mute', kind: 'video', muted: true });
  scheduleViews(s);
}

// ---------- WebRTC: the connection (negotiation.js does offer/answer) ----------

function createPeerConnection(s, iceServers) {
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: FORCE_RELAY ? 'relay' : 'all' });
  for (const track of localStream.getTracks()) addLocalTrack(pc, track, localStream);
  // A screen shared before a rejoin goes on being shared.
  if (meeting.screen) meeting.screen.transceiver = publishScreen(pc, meeting.screen.track, meeting.screen.stream);
  // Created before the first offer, so the offer carries the SCTP m-section.
  chat.attach(pc.createDataChannel(CHAT_LABEL), true);
  pc.onnegotiationneeded = () => {
    s.negotiationNeeded = true;
    offerIfNeeded(s);
  };
  pc.onicecandidate = (e) => {
    if (!e.candidate) return;
    s.localCandidates++;
    if (s === session) send(s, { type: 'candidate', candidate: e.candidate.toJSON() });
  };
  pc.ontrack = (e) => { if (s === session) onRemoteTrack(e.track, e.streams[0]); };
  pc.onconnectionstatechange = () => {
    if (s !== session) return;
    const st = pc.connectionState;
    if (st === 'connected') {
      clearTimeout(s.connectTimer);
      clearTimeout(s.graceTimer);
      meeting.attempt = 0; // a healthy connection earns a fresh set of retries
      showNotice('');
      setConnState('connected');
      showMediaPath(s, pc);
      if (s.restart) {
        clearTimeout(s.restart.timer);
        iceRestarts.push({ ms: Math.round(performance.now() - s.restart.startedAt) });
        console.info(`ICE restart reconnected in ${iceRestarts.at(-1).ms} ms`);
        s.restart = null;
      }
    } else if (st === 'disconnected') {
      // ICE often recovers by itself from a blip; if not, restart it on this connection.
      setConnState('reconnecting');
      clearTimeout(s.graceTimer);
      restartUnlessMediaFlows(s, pc);
    } else if (st === 'failed') {
      setConnState('reconnecting');
      restartIce(s);
    }
  };
  return pc;
}

// Media bytes this connection has received so far.
async function bytesReceived(pc) {
  let bytes = 0;
  (await pc.getStats().catch(() => new Map())).forEach((r) => {
    if (r.type === 'inbound-rtp') bytes += r.bytesReceived ?? 0;
  });
  return bytes;
}

// ICE calls a path disconnected once a few consent checks go unanswered, which a lossy
// link does now and then while media still flows (Firefox at 5 % loss each way restarted
// ICE in the middle of a call, and its receivers started their counters over). After the
// grace period ICE is restarted only if nothing arrived meanwhile; while media flows the
// check is repeated ('failed', or 'connected', ends it).
async function restartUnlessMediaFlows(s, pc) {
  const before = await bytesReceived(pc);
  if (s !== session || pc.connectionState !== 'disconnected') return;
  clearTimeout(s.graceTimer);
  s.graceTimer = setTimeout(async () => {
    if (s !== session || pc.connectionState !== 'disconnected') return;
    if ((await bytesReceived(pc)) > before) restartUnlessMediaFlows(s, pc);
    else restartIce(s);
  }, DISCONNECTED_GRACE_MS);
}

// The media path broke but signaling still works: new ICE credentials on the same
// connection (the server's demux follows its new ufrag), keeping our participant, tiles,
// subscriptions and chat. Without signaling, or if it does not reconnect in time, the
// meeting is joined again from scratch.
function restartIce(s) {
  if (s !== session || s.restart) return;
  if (!s.joined || !s.signaling.open) return connectionLost(s);
  console.info('media path lost; restarting ICE');
  s.restart = { startedAt: performance.now(), offered: false, timer: setTimeout(() => {
    if (s !== session) return;
    if (s.pc.connectionState === 'connected') s.restart = null; // it never looked down
    else connectionLost(s);
  }, ICE_RESTART_TIMEOUT_MS) };
  s.pc.restartIce();
  offerIfNeeded(s);
}

// ---------- reconnecting and leaving ----------

function closeSession(s) {
  if (!s) return;
  s.closing = true;
  clearTimeout(s.connectTimer);
  clearTimeout(s.graceTimer);
  clearTimeout(s.restart?.timer);
  clearTimeout(s.viewTimer);
  try { s.pc?.close(); } catch { /* already closed */ }
  s.signaling.close();
}

function clearRemoteTiles() {
  for (const id of [...tiles.keys()]) removeRemoteTile(id);
  for (const id of [...screens.keys()]) removeScreenTile(id);
  trackSources.clear();
}

// The room is hosted by another node of the cluster: join there at once, as the same
// attempt (the socket here closes). Bounded: a page moved three times in a row gives up
// on moving and goes through the usual retries.
function onMoved(s, msg) {
  if (s !== session || typeof msg.url !== 'string') return;
  meeting.moves = (meeting.moves ?? 0) + 1;
  if (meeting.moves > 3) return;
  console.info(`room hosted by node ${msg.node}: moving to ${msg.url}`);
  meeting.movedTo = msg.url;
  meeting.lastMovedTo = msg.url;
  s.closing = true;
  closeSession(s);
  session = null;
  // Moved mid-meeting (the room's node drains): the new node's `joined` brings the
  // room back; tiles of the old session would only go stale.
  if (s.joined) clearRemoteTiles();
  connect();
}

// `unreachable`: the signaling URL this attempt could not open at all.
function connectionLost(s, unreachable) {
  if (s !== session || !meeting) return;
  // Back to this page's own node: it knows where the room is now (the room's node may
  // be gone). If the page's own node is the one that cannot be reached (it drained and
  // stopped), try the node the page was last moved to instead; that one redirects too.
  const own = signalingUrl();
  meeting.movedTo = unreachable === own && meeting.lastMovedTo !== own ? meeting.lastMovedTo : undefined;
  meeting.moves = 0;
  closeSession(s);
  session = null;
  clearRemoteTiles();
  if (meeting.attempt >= RETRY_DELAYS_MS.length) {
    setConnState('failed');
    if (ui.notice.hidden) showNotice('Connection to the meeting failed.');
    else showNotice(ui.notice.textContent.replace(/ Retrying…$/, ''));
    return;
  }
  setConnState('reconnecting');
  const delay = RETRY_DELAYS_MS[meeting.attempt++];
  meeting.retryTimer = setTimeout(() => meeting && !session && connect(), delay);
}

// The server removed us (an administrator, or the room closed): no reconnecting.
function onRemoved(reason) {
  const m = meeting;
  endMeeting();
  setConnState('failed');
  showForm();
  if (m) { ui.room.value = m.room; ui.name.value = m.name; }
  showServerError('removed', reason);
}

// Stop everything this meeting owns; leaves the page where it is.
function endMeeting() {
  if (meeting) clearTimeout(meeting.retryTimer);
  closeSession(session);
  session = null;
  meeting = null;
  clearRemoteTiles();
  onSpeakers([]);
  recentSpeakers.length = 0;
  stopScreenShare();
  chat.reset();
  localStream?.getTracks().forEach((t) => t.stop());
  localStream = null;
  ui.sound.hidden = true;
}

function leave() {
  if (session) send(session, { type: 'leave' });
  endMeeting();
  ui.connState.hidden = true;
  showForm();
  showNotice(MSG.left);
}

// ---------- tiles ----------

function makeLocalTile(name) {
  const { el, video } = makeTile(`${name} (you)`, 'local');
  video.muted = true; // never play our own microphone back
  // (An empty stream, a watch-only token's, would hold the page's load event forever.)
  if (localStream.getTracks().length) video.srcObject = localStream;
  return el;
}

function ensureRemoteTile(p) {
  let tile = tiles.get(p.id);
  if (!tile) {
    const { el, video } = makeTile(p.name ?? p.id, 'remote', canChooseSpeaker() ? prefs.speakerId : null);
    el.dataset.participantId = p.id;
    tile = { id: p.id, el, video, stream: new MediaStream(), tracks: new Set(), unpublished: new Set(),
      visible: true, fixedSize: null };
    tiles.set(p.id, tile);
    addSizeButton(tile);
    ui.grid.append(el);
    tileObservers.resize.observe(el);
    tileObservers.intersection.observe(el);
    orderTiles();
    updateGrid();
  } else if (p.name) {
    setTileName(tile.el, p.name);
  }
  if ('audio_muted' in p) setTileMuted(tile.el, 'audio', p.audio_muted);
  if ('video_muted' in p) setTileMuted(tile.el, 'video', p.video_muted);
  refreshRoomViews();
  return tile;
}

// The server dropped notifications while this page fell behind (a burst of others'
// changes, a slow tab): the room as it is now replaces what the page knew.
function onResync(msg) {
  const present = new Set(msg.participants.map((p) => p.id));
  for (const id of [...tiles.keys()]) if (id !== meeting.participantId && !present.has(id)) removeRemoteTile(id);
  for (const p of msg.participants) ensureRemoteTile(p);
  const published = new Set((msg.tracks ?? []).map((t) => t.track_id));
  for (const trackId of [...screens.keys()]) if (!published.has(trackId)) removeScreenTile(trackId);
  for (const tile of tiles.values()) {
    for (const track of tile.tracks) {
      const serverId = receivedAs.get(track);
      if (serverId && !published.has(serverId)) onTrackUnpublished(tile.id, serverId);
    }
  }
  for (const trackId of [...trackSources.keys()]) if (!published.has(trackId)) trackSources.delete(trackId);
  for (const t of msg.tracks ?? []) noteTrack(t);
}

function removeRemoteTile(id) {
  for (const [trackId, screen] of screens) if (screen.participantId === id) removeScreenTile(trackId);
  const tile = tiles.get(id);
  if (!tile) return;
  tile.video.srcObject = null;
  tileObservers.resize.unobserve(tile.el);
  tileObservers.intersection.unobserve(tile.el);
  tile.el.remove();
  tiles.delete(id);
  updateGrid();
  refreshRoomViews();
}

// The server sends each publisher's tracks in a stream whose id is the participant id,
// so ontrack says who a track belongs to. Chrome's own addtrack/removetrack events on
// that stream are not used: they interleave with ontrack in any order during
// renegotiation. A track leaves a tile on track_unpublished, on 'ended', when ontrack
// gives it to someone else, or with its participant. Remote tracks' 'mute' events are
// not used either: Chrome fires them whenever RTP pauses briefly.
// The server's id of each received track as of its latest ontrack. A receiver the server
// reuses for another track (it recycles m-sections) keeps its first track.id for good.
const receivedAs = new WeakMap();

function onRemoteTrack(track, stream) {
  if (!stream) return console.warn('remote track without a stream', track.id);
  const serverId = session?.pc ? serverTrackId(session.pc, track) : track.id;
  receivedAs.set(track, serverId);
  // A receiver the server reuses for another track brings the same track object back.
  for (const [id, screen] of screens) if (screen.track === track && id !== serverId) removeScreenTile(id);
  if (trackSources.get(serverId) === 'screen') return showScreenTile(stream.id, serverId, track);
  for (const other of tiles.values()) {
    if (other.id !== stream.id && other.tracks.delete(track)) syncTile(other);
  }
  const tile = ensureRemoteTile({ id: stream.id });
  for (const old of tile.tracks) if (old.kind === track.kind) tile.tracks.delete(old); // one per kind
  tile.tracks.add(track);
  tile.unpublished.delete(serverId); // (re)negotiated, so published again
  track.addEventListener('ended', () => syncTile(tile), { once: true });
  syncTile(tile);
}

function onTrackUnpublished(participantId, trackId) {
  trackSources.delete(trackId);
  if (screens.has(trackId)) return removeScreenTile(trackId);
  const tile = tiles.get(participantId);
  if (!tile) return;
  tile.unpublished.add(trackId);
  syncTile(tile);
}

// Point the tile's <video> at exactly the participant's live, still-published tracks.
function syncTile(tile) {
  if (tiles.get(tile.id) !== tile) return; // the tile is gone
  for (const t of tile.tracks) {
    if (t.readyState === 'ended' || tile.unpublished.has(receivedAs.get(t) ?? t.id)) tile.tracks.delete(t);
  }
  const want = [...tile.tracks];
  const have = tile.stream.getTracks();
  if (want.length === have.length && want.every((t) => have.includes(t))) return;
  tile.stream = new MediaStream(want);
  attachStream(tile);
  if (session) scheduleViews(session);
}

// Re-assigning srcObject makes the element pick up the changed track set reliably.
function attachStream(tile) {
  tile.video.srcObject = null;
  if (tile.stream.getTracks().length === 0) return;
  tile.video.srcObject = tile.stream;
  tile.video.play().catch((err) => {
    // Autoplay with sound needs a user gesture when the page joined straight from the URL.
    if (err.name !== 'NotAllowedError') return;
    tile.video.muted = true;
    tile.video.play().catch(() => {});
    ui.sound.hidden = false;
  });
}

function enableSound() {
  for (const tile of tiles.values()) {
    tile.video.muted = false;
    tile.video.play().catch(() => {});
  }
  ui.sound.hidden = true;
}

// ---------- what we watch: `view` messages ----------

// The server picks each remote video's layer from the size we show it at, and stops
// sending video nobody can see. Observers only schedule; one flush sends what changed.
const tileObservers = {
  resize: new ResizeObserver(() => session && scheduleViews(session)),
  intersection: new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const tile = [...tiles.values(), ...screens.values()].find((t) => t.el === entry.target);
      if (tile) tile.visible = entry.isIntersecting;
    }
    if (session) scheduleViews(session);
  }),
};
document.addEventListener('visibilitychange', () => session && scheduleViews(session));

function scheduleViews(s) {
  if (s.viewTimer || s !== session) return;
  const wait = Math.max(0, s.lastViewFlush + VIEW_INTERVAL_MS - Date.now());
  s.viewTimer = setTimeout(() => {
    s.viewTimer = null;
    s.lastViewFlush = Date.now();
    if (s === session) flushViews(s);
  }, wait);
}

// One `view` per remote video track whose rendered size or visibility differs from what
// the server was last told on this connection.
function flushViews(s) {
  if (!s.joined || !s.pc || !s.signaling.open) return;
  for (const v of currentViews(s.pc)) {
    const key = `${v.width}x${v.height}:${v.visible}`;
    if (s.views.get(v.track_id) === key) continue;
    s.views.set(v.track_id, key);
    console.debug('view', v.track_id, key);
    send(s, { type: 'view', ...v });
  }
}

function currentViews(pc) {
  const pageVisible = document.visibilityState === 'visible';
  const dpr = window.devicePixelRatio || 1;
  const out = [];
  for (const screen of screens.values()) {
    const box = screen.el.getBoundingClientRect();
    const width = Math.round(box.width * dpr);
    const height = Math.round(box.height * dpr);
    out.push({ track_id: screen.trackId, width, height, visible: pageVisible && screen.visible && width > 0 && height > 0 });
  }
  for (const tile of tiles.values()) {
    const track = [...tile.tracks].find((t) => t.kind === 'video' && t.readyState !== 'ended');
    if (!track) continue;
    const box = tile.el.getBoundingClientRect();
    const width = Math.round(box.width * dpr);
    const height = Math.round(box.height * dpr);
    out.push({ track_id: serverTrackId(pc, track), width, height,
      visible: pageVisible && tile.visible && width > 0 && height > 0 });
  }
  return out;
}

// ---------- active speakers ----------

// `participant_ids`: who is speaking now, the dominant speaker first. Every speaking tile
// gets data-speaking="true"; the dominant one also the class `dominant` (a stronger
// outline) and moves to the front of the remote tiles.
function onSpeakers(ids) {
  speakers = Array.isArray(ids) ? ids.filter((id) => typeof id === 'string') : [];
  speakerHistory.push({ at: Date.now(), ids: speakers });
  if (speakerHistory.length > SPEAKER_HISTORY_MAX) speakerHistory.shift();
  for (const el of ui.grid.querySelectorAll('.tile')) {
    const i = speakers.indexOf(el.dataset.participantId);
    el.dataset.speaking = String(i >= 0);
    el.classList.toggle('speaking', i >= 0);
    el.classList.toggle('dominant', i === 0);
  }
  const dominant = speakers[0];
  if (dominant && tiles.has(dominant) && recentSpeakers[0] !== dominant) {
    const at = recentSpeakers.indexOf(dominant);
    if (at >= 0) recentSpeakers.splice(at, 1);
    recentSpeakers.unshift(dominant);
    if (recentSpeakers.length > 64) recentSpeakers.pop();
    orderTiles();
  }
  refreshRoomViews();
}

// The local tile stays first; remote tiles follow, recent dominant speakers first, the
// rest in the order they joined. CSS `order` moves them without touching the DOM, so
// playing <video> elements are never detached.
function orderTiles() {
  const rank = new Map(recentSpeakers.map((id, i) => [id, i]));
  const remote = [...tiles.values()];
  const position = (t, i) => (rank.has(t.id) ? rank.get(t.id) : recentSpeakers.length + i);
  const sorted = remote.map((t, i) => ({ t, p: position(t, i) })).sort((a, b) => a.p - b.p);
  sorted.forEach(({ t }, i) => { t.el.style.order = String(i + 1); });
}

// ---------- tile size ----------

// A remote tile can be shrunk to a thumbnail (the button on it, or setTileSize for
// tests); the server then sends it a smaller layer.
function setTileSize(participantId, width, height) {
  const tile = tiles.get(participantId);
  if (!tile) return false;
  tile.fixedSize = width > 0 && height > 0 ? { width, height } : null;
  tile.el.classList.toggle('small', !!tile.fixedSize);
  tile.el.style.width = tile.fixedSize ? `${width}px` : '';
  tile.el.style.height = tile.fixedSize ? `${height}px` : '';
  tile.el.style.aspectRatio = tile.fixedSize ? 'auto' : '';
  const button = tile.el.querySelector('.size-button');
  if (button) showSizeButton(button, !!tile.fixedSize);
  if (session) scheduleViews(session);
  return true;
}

function addSizeButton(tile) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'size-button';
  showSizeButton(button, false);
  button.addEventListener('click', () => setTileSize(tile.id, ...(tile.fixedSize ? [0, 0] : [192, 108])));
  tile.el.append(button);
}

function updateGrid() {
  fitGrid(ui.grid);
}
new ResizeObserver(updateGrid).observe(ui.grid);

// ---------- controls ----------

function toggle(kind) {
  if (!meeting || !localStream) return;
  const key = kind === 'audio' ? 'audioMuted' : 'videoMuted';
  meeting[key] = !meeting[key];
  // enabled=false keeps the track negotiated but sends silence/black, so unmuting needs no renegotiation.
  for (const t of localStream.getTracks()) if (t.kind === kind) t.enabled = !meeting[key];
  if (session?.joined) send(session, { type: 'mute', kind, muted: meeting[key] });
  updateControls();
  refreshRoomViews();
}

// An administrator muted (or unmuted) us: the server stopped forwarding; show it.
function onMutedByServer(kind, muted) {
  const key = kind === 'audio' ? 'audioMuted' : 'videoMuted';
  meeting[key] = muted;
  for (const t of localStream?.getTracks() ?? []) if (t.kind === kind) t.enabled = !muted;
  updateControls();
  refreshRoomViews();
}

// ---------- layout, people, invite, quality ----------

// The layout's spotlight and the participant list follow every change in the room.
function refreshRoomViews() {
  if (!meeting) return;
  // A shared screen takes the spotlight (the latest, with several), cameras the strip.
  const screen = [...screens.values()].at(-1)?.el;
  const speaker = spotlightOf(speakers, recentSpeakers, [...tiles.keys()]);
  applyLayout(ui.grid, screen ? 'speaker' : layoutMode, (el) => (screen ? el === screen
    : el.classList.contains('remote') && !el.classList.contains('screen') && el.dataset.participantId === speaker));
  ui.layoutButton.textContent = layoutMode === 'grid' ? 'Speaker view' : 'Grid view';
  ui.layoutButton.setAttribute('aria-pressed', String(layoutMode === 'speaker'));
  if (ui.people.hidden) return;
  const people = [{ name: meeting.name, audioMuted: meeting.audioMuted, videoMuted: meeting.videoMuted, you: true }];
  for (const t of tiles.values()) {
    people.push({ name: t.el.querySelector('.name').textContent, audioMuted: t.el.dataset.audioMuted === 'true',
      videoMuted: t.el.dataset.videoMuted === 'true' });
  }
  renderPeople(ui.peopleList, people);
}

async function copyInvite() {
  if (!meeting) return;
  const link = inviteLink(meeting.room);
  try {
    await navigator.clipboard.writeText(link);
    showNotice(`Invite link copied: ${link}`);
  } catch {
    showNotice(`Invite link: ${link}`); // no clipboard access: show it to copy by hand
  }
}

// Each received video's tile gets data-quality (good/fair/poor) and a tooltip with the figures.
async function refreshQuality() {
  const pc = session?.pc;
  if (!pc || !meeting) return;
  const byTrack = await qualityByTrack(pc).catch(() => new Map());
  for (const tile of tiles.values()) {
    const video = tile.stream.getVideoTracks()[0];
    const q = video && byTrack.get(video.id);
    if (!q) continue;
    tile.el.dataset.quality = q.level;
    const badge = tile.el.querySelector('.quality') ?? tile.el.appendChild(Object.assign(document.createElement('span'), { className: 'quality' }));
    badge.textContent = q.level;
    badge.title = `loss ${(q.loss * 100).toFixed(1)} %, jitter ${q.jitterMs.toFixed(0)} ms` +
      (q.rttMs == null ? '' : `, round trip ${q.rttMs.toFixed(0)} ms`);
  }
}
setInterval(refreshQuality, QUALITY_INTERVAL_MS);

ui.layoutButton.addEventListener('click', () => { layoutMode = layoutMode === 'grid' ? 'speaker' : 'grid'; refreshRoomViews(); });
ui.peopleButton.addEventListener('click', () => {
  ui.people.hidden = !ui.people.hidden;
  ui.peopleButton.setAttribute('aria-expanded', String(!ui.people.hidden));
  refreshRoomViews();
});
ui.inviteButton.addEventListener('click', copyInvite);
ui.screenButton.addEventListener('click', () => (meeting?.screen ? stopScreenShare() : startScreenShare()));

// ---------- screen sharing ----------

// What a track is, from `joined` and `track_published`. A screen that arrived before
// its `track_published` (not the server's order, but cheap to allow) moves to its tile.
function noteTrack(t) {
  if (!t?.track_id) return;
  trackSources.set(t.track_id, t.source ?? (t.kind === 'audio' ? 'microphone' : 'camera'));
  if (t.source !== 'screen') return;
  const tile = tiles.get(t.participant_id);
  const track = tile && [...tile.tracks].find((x) => session?.pc && serverTrackId(session.pc, x) === t.track_id);
  if (!track) return;
  tile.tracks.delete(track);
  syncTile(tile);
  showScreenTile(t.participant_id, t.track_id, track);
}

function showScreenTile(participantId, trackId, track) {
  removeScreenTile(trackId);
  const owner = tiles.get(participantId);
  const name = owner ? owner.el.querySelector('.name').textContent : participantId;
  const { el, video } = makeTile(`${name} (screen)`, 'remote');
  el.classList.add('screen');
  el.dataset.participantId = participantId;
  el.dataset.source = 'screen';
  el.dataset.trackId = trackId;
  const screen = { trackId, participantId, el, video, track, visible: true };
  screens.set(trackId, screen);
  video.muted = true; // video only
  video.srcObject = new MediaStream([track]);
  video.play().catch(() => {});
  track.addEventListener('ended', () => screens.get(trackId) === screen && removeScreenTile(trackId), { once: true });
  ui.grid.append(el);
  tileObservers.resize.observe(el);
  tileObservers.intersection.observe(el);
  updateGrid();
  refreshRoomViews();
  if (session) scheduleViews(session);
}

function removeScreenTile(trackId) {
  const screen = screens.get(trackId);
  if (!screen) return;
  screens.delete(trackId);
  screen.video.srcObject = null;
  tileObservers.resize.unobserve(screen.el);
  tileObservers.intersection.unobserve(screen.el);
  screen.el.remove();
  updateGrid();
  refreshRoomViews();
}

async function startScreenShare() {
  if (!meeting || meeting.screen) return;
  let stream;
  try {
    stream = await pickScreen();
  } catch (err) {
    return showNotice(`Cannot share the screen: ${err?.message ?? err}`);
  }
  const track = stream?.getVideoTracks()[0];
  if (!track || !meeting || meeting.screen) return void stream?.getTracks().forEach((t) => t.stop());
  const { el, video } = makeTile(`${meeting.name} (your screen)`, 'local');
  el.classList.add('screen');
  el.dataset.source = 'screen';
  video.muted = true;
  video.srcObject = stream;
  ui.grid.append(el);
  meeting.screen = { stream, track, el, transceiver: session?.pc ? publishScreen(session.pc, track, stream) : null };
  // The browser's own "Stop sharing" ends the track.
  track.addEventListener('ended', stopScreenShare, { once: true });
  ui.screenButton.textContent = 'Stop sharing';
  ui.screenButton.setAttribute('aria-pressed', 'true');
  updateGrid();
}

function stopScreenShare() {
  const screen = meeting?.screen;
  if (!screen) return;
  meeting.screen = null;
  if (screen.transceiver) unpublishScreen(session?.pc, screen.transceiver);
  screen.track.stop();
  screen.el.remove();
  ui.screenButton.textContent = 'Share screen';
  ui.screenButton.setAttribute('aria-pressed', 'false');
  updateGrid();
}

function updateControls() {
  const local = ui.grid.querySelector('.tile.local');
  setTileMuted(local, 'audio', meeting.audioMuted);
  setTileMuted(local, 'video', meeting.videoMuted);
  ui.mic.textContent = meeting.audioMuted ? 'Unmute' : 'Mute';
  ui.mic.setAttribute('aria-pressed', String(meeting.audioMuted));
  ui.cam.textContent = meeting.videoMuted ? 'Camera on' : 'Camera off';
  ui.cam.setAttribute('aria-pressed', String(meeting.videoMuted));
}

// ---------- wiring ----------

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  const room = ui.room.value.trim();
  const name = ui.name.value.trim();
  const problem = validate(room, name);
  ui.formError.textContent = problem ?? '';
  ui.formError.hidden = !problem;
  if (problem) return;
  // Make the address shareable: opening it joins the same room directly.
  history.replaceState(null, '', `/?${new URLSearchParams({ room, name })}`);
  startMeeting(room, name);
});
ui.mic.addEventListener('click', () => toggle('audio'));
ui.cam.addEventListener('click', () => toggle('video'));
ui.leave.addEventListener('click', leave);
ui.sound.addEventListener('click', enableSound);
$('server-error-close').addEventListener('click', () => { ui.serverError.hidden = true; });
// Tell the server right away instead of letting it wait for the socket to die.
window.addEventListener('pagehide', () => session && send(session, { type: 'leave' }));

window.switchyard = {
  get pc() { return session?.pc ?? null; },
  get layout() { return layoutMode; },
  // Offers this page has sent (switching a device must not add one).
  get offersSent() { return offersSent; },
  // Joins sent by this page, and each ICE restart's time to reconnect ({ms}).
  get joinsSent() { return joinsSent; },
  iceRestarts() { return iceRestarts.map((r) => ({ ...r })); },
  // Restart ICE now, as the page does when the media path breaks.
  restartIce() { if (session?.pc) restartIce(session); },
  chat,
  // The remote screen shares shown: [{trackId, participantId, spotlight}].
  screens() {
    return [...screens.values()].map((x) => ({ trackId: x.trackId, participantId: x.participantId,
      spotlight: x.el.classList.contains('spotlight') }));
  },
  get state() { return connState; },
  get participantId() { return meeting?.participantId ?? null; },
  remoteTileCount() { return ui.grid.querySelectorAll('.tile.remote').length; },
  // The last `speakers` list, and the recent ones as {at, ids}.
  get speakers() { return [...speakers]; },
  speakerHistory() { return speakerHistory.map((e) => ({ at: e.at, ids: [...e.ids] })); },
  // Fix a remote tile's CSS size (0, 0 restores it); false when there is no such tile.
  setTileSize,
  // What `view` would say now, per remote video: {track_id, width, height, visible}.
  views() { return session?.pc ? currentViews(session.pc) : []; },
  // Our senders' encodings as the browser has them: [{mid, kind, encodings: [{rid, active, ...}]}].
  sendEncodings() {
    return (session?.pc?.getTransceivers() ?? []).filter((t) => t.sender.track).map((t) => ({
      mid: t.mid, kind: t.sender.track.kind,
      encodings: (t.sender.getParameters().encodings ?? []).map((e) => ({ rid: e.rid, active: e.active,
        scaleResolutionDownBy: e.scaleResolutionDownBy, maxBitrate: e.maxBitrate })),
    }));
  },
};

// The room, display name and whether it may share a screen, from an access token (its
// payload, unverified: the server verifies and enforces), or null when it cannot be read.
function readToken(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')));
    const room = claims.grants?.room;
    const name = claims.name ?? claims.sub;
    const sources = Array.isArray(claims.grants?.canPublishSources) ? claims.grants.canPublishSources : [];
    const mayPublish = claims.grants?.canPublish !== false;
    const mayShareScreen = mayPublish && (sources.length === 0 || sources.includes('screen'));
    return typeof room === 'string' && typeof name === 'string' ? { room, name, mayPublish, mayShareScreen } : null;
  } catch {
    return null;
  }
}

// ---------- devices: the pre-join screen and switching in the meeting ----------

// Shows the camera preview, the microphone level and the device pickers on the join form.
async function startPreview() {
  stopPreview(true);
  const generation = ++previewGeneration;
  const stream = await getLocalMedia();
  if (!stream) return;
  if (generation !== previewGeneration || meeting) {
    stream.getTracks().forEach((t) => t.stop()); // joined, or asked again, meanwhile
    return;
  }
  const stopMeter = levelMeter(stream, (level) => { ui.micLevel.value = level; });
  preview = { stream, stopMeter };
  ui.preview.srcObject = stream;
  const track = (kind) => stream.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
  prefs.cameraId = track('video') ?? prefs.cameraId;
  prefs.micId = track('audio') ?? prefs.micId;
  const devices = await listDevices();
  fillPicker(ui.prejoinCamera, devices.cameras, prefs.cameraId);
  fillPicker(ui.prejoinMic, devices.mics, prefs.micId);
  ui.prejoinSpeakerLabel.hidden = !canChooseSpeaker() || devices.speakers.length === 0;
  fillPicker(ui.prejoinSpeaker, devices.speakers, prefs.speakerId);
}

// `stopTracks`: false when the meeting takes the stream over.
function stopPreview(stopTracks) {
  previewGeneration++;
  if (!preview) return;
  preview.stopMeter();
  if (stopTracks) preview.stream.getTracks().forEach((t) => t.stop());
  ui.preview.srcObject = null;
  preview = null;
}

async function fillMeetingPickers() {
  const devices = await listDevices().catch(() => null);
  if (!devices) return;
  const current = (kind) => localStream?.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
  fillPicker(ui.cameraSelect, devices.cameras, current('video'));
  fillPicker(ui.micSelect, devices.mics, current('audio'));
}

// In the meeting: a new camera or microphone by replaceTrack, no renegotiation.
async function changeDevice(kind, deviceId) {
  if (!localStream) return;
  try {
    await switchDevice(session?.pc, localStream, kind, deviceId);
    prefs[kind === 'video' ? 'cameraId' : 'micId'] = deviceId;
    savePrefs(prefs);
  } catch (err) {
    showNotice(`Could not switch the ${kind === 'video' ? 'camera' : 'microphone'}: ${err?.message ?? err}`);
  }
}

ui.prejoinCamera.addEventListener('change', () => { prefs.cameraId = ui.prejoinCamera.value; savePrefs(prefs); startPreview(); });
ui.prejoinMic.addEventListener('change', () => { prefs.micId = ui.prejoinMic.value; savePrefs(prefs); startPreview(); });
ui.prejoinSpeaker.addEventListener('change', () => { prefs.speakerId = ui.prejoinSpeaker.value; savePrefs(prefs); });
ui.joinMuted.addEventListener('change', () => { prefs.joinMuted = ui.joinMuted.checked; savePrefs(prefs); });
ui.joinCameraOff.addEventListener('change', () => { prefs.joinCameraOff = ui.joinCameraOff.checked; savePrefs(prefs); });
ui.cameraSelect.addEventListener('change', () => changeDevice('video', ui.cameraSelect.value));
ui.micSelect.addEventListener('change', () => changeDevice('audio', ui.micSelect.value));

function init() {
  ui.joinMuted.checked = !!prefs.joinMuted;
  ui.joinCameraOff.checked = !!prefs.joinCameraOff;
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  if (token) {
    // Read once, then out of the address bar, the history and any screenshot of the
    // page: the token is a credential (it stays in memory for reconnects).
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
    const granted = readToken(token);
    if (granted) {
      ui.screenButton.hidden = !granted.mayShareScreen; // the server would refuse it
      return startMeeting(granted.room, granted.name, token, { publish: granted.mayPublish });
    }
    ui.formError.textContent = 'The token in this link cannot be read; ask for a new link.';
    ui.formError.hidden = false;
    return;
  }
  const room = params.get('room') ?? '';
  const name = params.get('name') ?? '';
  ui.room.value = room;
  ui.name.value = name;
  if (room && name) {
    const problem = validate(room, name);
    if (problem) {
      ui.formError.textContent = problem;
      ui.formError.hidden = false;
    } else {
      startMeeting(room, name);
      return;
    }
  }
  startPreview();
}

init();
