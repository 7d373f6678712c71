// Plays the recording the page names; a file of its own, as the page's
// Content-Security-Policy runs no inline script.
const el = document.getElementById('player');
window.recording = AsciinemaPlayer.create(el.dataset.cast, el, {fit: 'width', idleTimeLimit: 2, preload: true});
