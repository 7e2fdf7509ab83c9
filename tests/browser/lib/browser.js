// browser.js - headless Chromium for the browser tests, with no network beyond loopback.
//
// Debian's /usr/bin/chromium driven by playwright-core (pinned in tests/js), with a fresh
// profile each time (removed on close). Two walls keep it off the network: the host
// resolver maps every name to nothing (so the browser's own background requests cannot
// reach out either), and every request a page makes goes through a route that lets only
// the allowed loopback origins through and aborts the rest, recording it in `blocked`, so
// a test can assert that nothing tried to leave.
//
// Routing has a cost: while requests are intercepted, Playwright answers CORS preflights
// itself (allowing everything), so the server under test never sees them. A test of CORS
// launches with intercept: false instead; the second wall is then a proxy that every
// request beyond loopback must go through (Chromium never proxies loopback), which refuses
// each one and records it in `refused` (the browser's own background requests too), while a
// page's request that failed for a URL beyond the allowed origins is recorded in `blocked`.
'use strict';

const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');

const TOOLS = path.join(__dirname, '..', '..', 'js', 'node_modules');
const CHROMIUM = process.env.CU_CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'];

// A package from tests/js/node_modules (make test-servers installs them).
function tool(name) {
  return require(path.join(TOOLS, name));
}

// The path of a file inside a package of tests/js/node_modules.
function toolFile(...parts) {
  return path.join(TOOLS, ...parts);
}

function isLoopback(url, allowed) {
  let u;
  try {
    u = new URL(url);
  } catch (e) {
    return false;
  }
  if (u.protocol === 'data:' || u.protocol === 'blob:' || url === 'about:blank') return true;
  return allowed.includes(u.origin);
}

// A proxy that refuses every request (it closes the connection unanswered, so the page sees
// a network error, as it would from the route), recording what each asked for:
// "http://host/path" for a plain request, "https://host:port" for a CONNECT.
function startWall(blocked) {
  const server = net.createServer((sock) => {
    sock.once('data', (d) => {
      const [method, target] = d.toString('latin1').split('\r\n', 1)[0].split(' ');
      blocked.push(method === 'CONNECT' ? `https://${target}` : target);
      sock.destroy();
    });
    sock.on('error', () => {});
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// Starts Chromium. allowedOrigins: ["http://127.0.0.1:PORT", ...]; intercept: false for the
// proxy wall instead of routing (see above). Resolves to {context, blocked, refused,
// newPage(), close()}; pages log their console to stderr.
async function launch({allowedOrigins, intercept = true}) {
  const {chromium} = tool('playwright-core');
  const blocked = [], refused = [];
  const wall = intercept ? null : await startWall(refused);
  const args = wall ? ARGS.concat([`--proxy-server=http://127.0.0.1:${wall.address().port}`]) : ARGS;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cu-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args, acceptDownloads: false,
      serviceWorkers: 'block',
    });
  } catch (e) {
    fs.rmSync(profile, {recursive: true, force: true});
    if (wall) wall.close();
    throw e;
  }
  if (intercept) {
    await context.route((url) => !isLoopback(url.href, allowedOrigins), (route) => {
      blocked.push(route.request().url());
      return route.abort('blockedbyclient');
    });
  } else {
    context.on('requestfailed', (r) => {
      if (!isLoopback(r.url(), allowedOrigins)) blocked.push(r.url());
    });
  }
  context.on('page', (page) => {
    page.on('console', (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[page error] ${e.message}\n`));
  });
  return {
    context, blocked, refused,
    async newPage() {
      const pages = context.pages();
      return pages.length === 1 && pages[0].url() === 'about:blank' ? pages[0] : context.newPage();
    },
    async close() {
      try {
        await context.close();
      } finally {
        fs.rmSync(profile, {recursive: true, force: true});
        if (wall) wall.close();
      }
    },
  };
}

// Reads the JSON configuration a runner is given on stdin.
function readConfig() {
  return JSON.parse(fs.readFileSync(0, 'utf8'));
}

module.exports = {launch, tool, toolFile, readConfig, isLoopback};
