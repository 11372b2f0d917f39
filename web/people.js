// The participant list: everyone in the room with their microphone and camera state.
// Names are set as text, never as HTML.

// `people`: [{name, audioMuted, videoMuted, you}]
export function renderPeople(list, people) {
  list.replaceChildren(...people.map((p) => {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'person-name';
    name.textContent = p.you ? `${p.name} (you)` : p.name;
    const state = document.createElement('span');
    state.className = 'person-state';
    state.textContent = `${p.audioMuted ? 'mic off' : 'mic on'} · ${p.videoMuted ? 'camera off' : 'camera on'}`;
    li.dataset.audioMuted = String(!!p.audioMuted);
    li.dataset.videoMuted = String(!!p.videoMuted);
    li.append(name, state);
    return li;
  }));
}

// The link that brings someone into this room (they pick their own name).
export function inviteLink(room) {
  return `${location.origin}/?${new URLSearchParams({ room })}`;
}
