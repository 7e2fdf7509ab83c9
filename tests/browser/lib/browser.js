// browser.js - headless Chromium for the browser tests, with no network beyond loopback.
//
// Debian's /usr/bin/chromium driven by playwright-core (pinned in tests/js), with a fresh
// profile each time (removed on close). Two walls keep it off the network: the host
// resolver maps every name to nothing (so the browser's own background requests cannot
// reach out either), and every request a page makes goes through a route that lets only
// the allowed loopback origins through and aborts the rest, recording it in `blocked`, so
// a test can assert that nothing tried to leave.
'use strict';

const fs = require('fs');
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

// Starts Chromium. allowedOrigins: ["http://127.0.0.1:PORT", ...]. Resolves to
// {context, blocked, newPage(), close()}; pages log their console to stderr.
async function launch({allowedOrigins}) {
  const {chromium} = tool('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cu-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: ARGS, acceptDownloads: false,
      serviceWorkers: 'block',
    });
  } catch (e) {
    fs.rmSync(profile, {recursive: true, force: true});
    throw e;
  }
  const blocked = [];
  await context.route((url) => !isLoopback(url.href, allowedOrigins), (route) => {
    blocked.push(route.request().url());
    return route.abort('blockedbyclient');
  });
  context.on('page', (page) => {
    page.on('console', (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
    page.on('pageerror', (e) => process.stderr.write(`[page error] ${e.message}\n`));
  });
  return {
    context, blocked,
    async newPage() {
      const pages = context.pages();
      return pages.length === 1 && pages[0].url() === 'about:blank' ? pages[0] : context.newPage();
    },
    async close() {
      try {
        await context.close();
      } finally {
        fs.rmSync(profile, {recursive: true, force: true});
      }
    },
  };
}

// Reads the JSON configuration a runner is given on stdin.
function readConfig() {
  return JSON.parse(fs.readFileSync(0, 'utf8'));
}

module.exports = {launch, tool, toolFile, readConfig, isLoopback};
