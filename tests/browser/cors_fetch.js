// cors_fetch.js - a page on another origin calls the server with fetch() in headless
// Chromium, so that the browser itself runs the CORS protocol: preflights, the allowed and
// exposed headers, a refused origin.
//
//   node cors_fetch.js SERVER_URL ALLOWED_PAGE_URL REFUSED_PAGE_URL API_KEY
//
// Prints one JSON object: what the page on each origin could do and read.
'use strict';
const path = require('path');
const fs = require('fs');
const os = require('os');
const { chromium } = require(path.join(__dirname, '..', 'js', 'node_modules', 'playwright-core'));

const [server, allowedPage, refusedPage, apiKey] = process.argv.slice(2);

// Runs in the page: the seed API's calls as a browser client makes them.
async function inPage({ server, apiKey }) {
  const out = {};
  try {
    const init = await fetch(server + '/upload/init', {
      method: 'POST',
      headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ filename: 'browser.bin', total_size: 5 }),
    });
    out.init = init.status;
    const j = await init.json();
    const part = await fetch(server + '/upload/' + j.file_id + '/part/0', {
      method: 'PUT',
      headers: { Authorization: 'Bearer ' + j.parts[0].token, 'Content-Type': 'application/octet-stream' },
      body: 'hello',
    });
    out.part = part.status;
    const status = await fetch(server + '/upload/' + j.file_id + '/status', { headers: { 'X-API-Key': apiKey } });
    out.status = status.status;
    out.uploaded = (await status.json()).uploaded_parts;
    out.requestId = status.headers.get('X-Request-Id');
    const missing = await fetch(server + '/nope');
    out.notFound = { status: missing.status, body: await missing.json() };
    // Until the rate limit answers: its 429 and Retry-After are readable too.
    for (let i = 0; i < 50; i++) {
      const r = await fetch(server + '/health');
      if (r.status === 429) {
        out.limited = { status: r.status, retryAfter: r.headers.get('Retry-After'), body: await r.json() };
        break;
      }
    }
  } catch (e) {
    out.error = String(e);
  }
  return out;
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cu-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const result = {};
  try {
    const page = await context.newPage();
    await page.goto(allowedPage);
    result.allowed = await page.evaluate(inPage, { server, apiKey });
    await page.goto(refusedPage);
    result.refused = await page.evaluate(inPage, { server, apiKey });
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(1);
});
