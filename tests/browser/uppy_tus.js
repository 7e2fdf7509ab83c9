#!/usr/bin/env node
// uppy_tus.js - Uppy with its tus plugin in headless Chromium, from a page on another origin.
//
// Reads {server, apiKey, pagePort, chunkSize, limit, files: [{name, size, seed, type}]} on
// stdin; serves tests/browser/pages/uppy.html with Uppy's bundle (tests/js) from a web server
// of its own at http://127.0.0.1:<pagePort> (the origin the server's CORS_ALLOWED_ORIGINS
// names) and uploads the files to <server>/files/ from there; writes one JSON line: each
// file's outcome, every request the page made to the server (method, URL, status), what the
// page tried to reach beyond the two origins (blocked), what the wall refused (the page's
// attempts and the browser's own), and timings.
'use strict';

const path = require('path');
const {launch, toolFile, readConfig} = require('./lib/browser');
const serve = require('./lib/serve');

const PAGES = path.join(__dirname, 'pages');

async function main() {
  const cfg = readConfig();
  const t0 = Date.now();
  const web = await serve.start({
    port: cfg.pagePort,
    files: {
      '/pages/uppy.html': path.join(PAGES, 'uppy.html'),
      '/pages/uppy.js': path.join(PAGES, 'uppy.js'),
      '/pages/bytes.js': path.join(PAGES, 'bytes.js'),
      '/lib/uppy.min.js': toolFile('uppy', 'dist', 'uppy.min.js'),
      '/lib/uppy.min.css': toolFile('uppy', 'dist', 'uppy.min.css'),
    },
  });
  const serverOrigin = new URL(cfg.server).origin;
  // No request interception: the browser's own CORS preflights must reach the server.
  const browser = await launch({allowedOrigins: [web.origin, serverOrigin], intercept: false});
  const out = {pageOrigin: web.origin, requests: []};
  try {
    const page = await browser.newPage();
    page.on('requestfinished', async (r) => {
      if (!r.url().startsWith(serverOrigin)) return;
      const res = await r.response();
      out.requests.push({method: r.method(), url: r.url(), status: res ? res.status() : null});
    });
    page.on('requestfailed', (r) => {
      if (r.url().startsWith(serverOrigin))
        out.requests.push({method: r.method(), url: r.url(), failed: r.failure().errorText});
    });
    await page.goto(`${web.origin}/pages/uppy.html`);
    const started = Date.now();
    out.result = await page.evaluate((o) => cuUppyUpload(o), {
      endpoint: `${cfg.server}/files/`, apiKey: cfg.apiKey, chunkSize: cfg.chunkSize,
      limit: cfg.limit, files: cfg.files,
    });
    out.uploadSeconds = (Date.now() - started) / 1000;
    out.outside = await page.evaluate(() => cuTryOutside('http://example.com/cu-probe'));
  } finally {
    out.blocked = browser.blocked;
    out.refused = browser.refused;
    await browser.close();
    await web.close();
  }
  out.seconds = (Date.now() - t0) / 1000;
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`uppy_tus.js: ${e.stack || e}\n`);
  process.exit(1);
});
