// The chat panel. Messages travel on a data channel labelled "chat" on the meeting's one
// RTCPeerConnection; the server relays each to everyone in the room (the sender too, as
// its confirmation) and replays the recent history to whoever opens a channel later.
// Text is always set with textContent: a message is never read as HTML.

export const CHAT_LABEL = 'chat';
export const CHAT_MAX_CHARS = 2000; // the server's limit (src/room/chat.rs)

// `ui`: {panel, list, form, input, button, badge, error}. Returns the chat's handle.
// Messages kept on screen; older ones leave as new ones come (the server keeps the last
// 100 for who joins later, so a page never needs more than a long meeting's worth).
const MAX_SHOWN = 500;

export function createChat(ui) {
  let channel = null;
  let unread = 0;
  const received = []; // every message shown, for tests: {from, name, text, at, history}

  const open = () => !ui.panel.hidden;
  const showUnread = () => {
    ui.badge.textContent = String(unread);
    ui.badge.hidden = unread === 0;
    ui.button.setAttribute('aria-label', unread ? `Chat, ${unread} unread` : 'Chat');
  };

  function show(msg) {
    received.push({ from: msg.from, name: msg.name, text: msg.text, at: msg.at, history: !!msg.history });
    // A long meeting's chat keeps the latest MAX_SHOWN messages, on screen and here.
    if (received.length > MAX_SHOWN) {
      received.shift();
      ui.list.firstElementChild?.remove();
    }
    const li = document.createElement('li');
    li.className = 'chat-message';
    li.dataset.from = msg.from;
    const head = document.createElement('div');
    head.className = 'chat-head';
    const name = document.createElement('span');
    name.className = 'chat-name';
    name.textContent = msg.name || msg.from;
    const time = document.createElement('time');
    const at = new Date(Number(msg.at) || Date.now());
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    head.append(name, time);
    const text = document.createElement('p');
    text.className = 'chat-text';
    text.textContent = msg.text;
    li.append(head, text);
    const atBottom = ui.list.scrollHeight - ui.list.scrollTop - ui.list.clientHeight < 40;
    ui.list.append(li);
    if (atBottom || !open()) ui.list.scrollTop = ui.list.scrollHeight;
    if (!open() && !msg.history) { unread++; showUnread(); }
  }

  function onData(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return console.warn('non-JSON on the chat channel'); }
    if (msg?.type !== 'chat' || typeof msg.text !== 'string') return; // a newer server's kind
    show(msg);
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.input.value.trim();
    if (!text) return;
    if ([...text].length > CHAT_MAX_CHARS) return showError(`At most ${CHAT_MAX_CHARS} characters.`);
    if (channel?.readyState !== 'open') return showError('Chat is not connected yet.');
    channel.send(text);
    ui.input.value = '';
    showError('');
  });
  ui.button.addEventListener('click', () => setOpen(!open()));

  function setOpen(on) {
    ui.panel.hidden = !on;
    ui.button.setAttribute('aria-expanded', String(on));
    if (on) {
      unread = 0;
      showUnread();
      ui.list.scrollTop = ui.list.scrollHeight;
      ui.input.focus();
    }
  }

  return {
    // A new connection's channel. `fresh`: a new join, whose history replaces what is shown.
    attach(dc, fresh) {
      channel = dc;
      if (fresh) { ui.list.replaceChildren(); received.length = 0; unread = 0; showUnread(); }
      dc.addEventListener('message', (e) => onData(e.data));
    },
    // The server refused something we sent (too long, too fast): say so in the panel.
    showError,
    setOpen,
    reset() { channel = null; ui.list.replaceChildren(); received.length = 0; unread = 0; showUnread(); showError(''); setOpen(false); },
    get unread() { return unread; },
    messages() { return received.map((m) => ({ ...m })); },
    send(text) { if (channel?.readyState !== 'open') return false; channel.send(text); return true; },
    // For tests of the server's refusals: bytes as a binary message.
    sendBinary(bytes) { if (channel?.readyState !== 'open') return false; channel.send(bytes); return true; },
  };
}
