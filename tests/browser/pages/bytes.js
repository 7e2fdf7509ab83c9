// bytes.js - what the browser tests' pages share: files made in the page (the same bytes for
// the same seed, so a reloaded page makes the same file again), their SHA-256, a status
// line, and a probe of the network wall.
'use strict';

// size bytes from a xorshift32 stream seeded with seed.
function cuMakeBytes(size, seed) {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = (seed >>> 0) || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  return new Uint8Array(words.buffer, 0, size);
}

async function cuSha256(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

function cuStatus(text) {
  document.getElementById('status').textContent = text;
}

// A request to an address beyond loopback, which the test's browser must refuse.
async function cuTryOutside(url) {
  try {
    await fetch(url, {mode: 'no-cors'});
    return 'reached';
  } catch (e) {
    return 'refused';
  }
}
