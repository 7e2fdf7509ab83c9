#!/usr/bin/env node
// chunked.js - flow.js and resumable.js, unchanged, uploading from headless Chromium.
//
// Reads {server, apiKey, scenarios: [...]} on stdin; serves tests/browser/pages/chunked.html
// and the two libraries (from tests/js) from a web server of its own that passes /api/ on
// to the server under test (same origin, so no CORS yet); runs each scenario in one
// browser; writes one JSON line: every scenario's outcome and the API requests it made (as
// that web server saw them), what the browser tried to reach beyond loopback, and timings.
//
// A scenario: {name, library: "flow" | "resumable", name of the file (fileName), its
// relativePath, size, seed, chunkSize, simultaneousUploads, forceChunkSize, reloadAfter}.
// With reloadAfter = N the page is reloaded once N chunks have been stored (replies 200),
// cutting off the chunks in flight; the reloaded page makes the same file again and the
// library resumes it, testing each chunk first (testChunks). Requests are tagged with the
// phase they began in: "<name>:before" and "<name>:reloading" (the first page's),
// "<name>:after" (the reloaded page's, or the only page's without a reload).
'use strict';

const path = require('path');
const {launch, toolFile, readConfig} = require('./lib/browser');
const serve = require('./lib/serve');

const PAGES = path.join(__dirname, 'pages');

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function pageOptions(cfg, s) {
  return {library: s.library, name: s.fileName, relativePath: s.relativePath, size: s.size,
          seed: s.seed, chunkSize: s.chunkSize, simultaneousUploads: s.simultaneousUploads,
          forceChunkSize: s.forceChunkSize, type: s.type, apiKey: cfg.apiKey,
          target: '/api/files/upload/chunked'};
}

async function runScenario(cfg, web, page, s) {
  const url = `${web.origin}/pages/chunked.html`;
  const opts = pageOptions(cfg, s);
  const started = Date.now();
  const mine = () => web.log.filter((e) => e.phase.startsWith(s.name + ':'));
  web.setPhase(s.name + ':before');
  await page.goto(url);
  let result;
  if (s.reloadAfter) {
    const first = page.evaluate((o) => cuUpload(o), opts).catch((e) => ({cut: e.message}));
    const stored = () => mine().filter((e) => e.method === 'POST' && e.status === 200).length;
    await waitFor(() => stored() >= s.reloadAfter, 30000, `${s.reloadAfter} stored chunks`);
    web.setPhase(s.name + ':reloading'); // the old page's last requests
    await page.reload();
    web.setPhase(s.name + ':after');
    const cut = await first;
    if (!cut || !cut.cut) throw new Error(`the upload finished before the reload: ${JSON.stringify(cut)}`);
    result = await page.evaluate((o) => cuUpload(o), opts);
  } else {
    web.setPhase(s.name + ':after');
    result = await page.evaluate((o) => cuUpload(o), opts);
  }
  // Requests still being answered when the library finished (none should be) get a moment.
  await sleep(50);
  return {name: s.name, seconds: (Date.now() - started) / 1000, result, requests: mine()};
}

async function main() {
  const cfg = readConfig();
  const t0 = Date.now();
  const web = await serve.start({
    files: {
      '/pages/chunked.html': path.join(PAGES, 'chunked.html'),
      '/pages/chunked.js': path.join(PAGES, 'chunked.js'),
      '/pages/bytes.js': path.join(PAGES, 'bytes.js'),
      '/lib/flow.js': toolFile('@flowjs', 'flow.js', 'dist', 'flow.js'),
      '/lib/resumable.js': toolFile('resumablejs', 'resumable.js'),
    },
    proxy: {target: cfg.server, prefixes: ['/api/']},
  });
  const browser = await launch({allowedOrigins: [web.origin]});
  const out = {scenarios: [], blocked: browser.blocked};
  try {
    out.launchSeconds = (Date.now() - t0) / 1000;
    const page = await browser.newPage();
    for (const s of cfg.scenarios) out.scenarios.push(await runScenario(cfg, web, page, s));
    // The wall: a page's request beyond loopback is refused, and recorded.
    out.outside = await page.evaluate(() => cuTryOutside('http://example.com/cu-probe'));
  } finally {
    await browser.close();
    await web.close();
  }
  out.seconds = (Date.now() - t0) / 1000;
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`chunked.js: ${e.stack || e}\n`);
  process.exit(1);
});
