// Grid or speaker view. In speaker view one remote tile is the spotlight (large): the
// dominant speaker as the server reports it, else the most recent one, else the first
// to arrive; the other tiles form a strip. Tiles are never moved in the DOM (playing
// <video> elements would stall): classes and CSS `order` do it.

// The participant id to spotlight, or null (nobody else is here).
export function spotlightOf(speakers, recentSpeakers, remoteIds) {
  const present = new Set(remoteIds);
  return [...speakers, ...recentSpeakers, ...remoteIds].find((id) => present.has(id)) ?? null;
}

// `isSpotlight(tileElement)`: whether that tile is the large one (speaker view only).
export function applyLayout(grid, mode, isSpotlight) {
  grid.dataset.layout = mode;
  for (const tile of grid.querySelectorAll('.tile')) {
    tile.classList.toggle('spotlight', mode === 'speaker' && isSpotlight(tile));
  }
}
