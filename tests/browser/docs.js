#!/usr/bin/env node
// docs.js - the API docs page (/api/docs) in headless Chromium, with every request beyond
// loopback blocked.
//
// Reads {server, screenshot} on stdin, opens <server>/api/docs and waits for Swagger UI to
// render the server's OpenAPI document; writes one JSON line: the operations the page shows
// (method, path, summary), the tags, the title, every request the page made (with its status),
// what it tried to reach beyond the server (blocked), the Content-Security-Policy
// violations it reported and the page's errors. With `screenshot`, a PNG of the page is
// written there.
'use strict';

const {launch, readConfig} = require('./lib/browser');

async function main() {
  const cfg = readConfig();
  const origin = new URL(cfg.server).origin;
  const browser = await launch({allowedOrigins: [origin]});
  const out = {requests: [], violations: [], errors: []};
  try {
    const page = await browser.newPage();
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) out.violations.push(m.text());
    });
    page.on('pageerror', (e) => out.errors.push(e.message));
    page.on('response', (r) => out.requests.push({url: r.url(), status: r.status(),
                                                  type: r.headers()['content-type'] || null}));
    page.on('requestfailed', (r) => out.requests.push({url: r.url(), failed: r.failure().errorText}));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        console.error(`Content Security Policy violation: ${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    const started = Date.now();
    await page.goto(`${cfg.server}/api/docs`, {waitUntil: 'load'});
    await page.waitForSelector('.opblock-summary', {timeout: 30000});
    out.renderSeconds = (Date.now() - started) / 1000;
    out.title = await page.title();
    out.heading = await page.$eval('.info .title', (e) => e.textContent.trim()).catch(() => null);
    out.operations = await page.$$eval('.opblock', (blocks) => blocks.map((b) => ({
      method: (b.querySelector('.opblock-summary-method') || {}).textContent,
      path: ((b.querySelector('.opblock-summary-path') || {}).textContent || '').replace(/\u200b/g, ''),
      summary: ((b.querySelector('.opblock-summary-description') || {}).textContent || '').trim(),
    })));
    out.tags = await page.$$eval('.opblock-tag', (tags) => tags.map((t) => t.getAttribute('data-tag')));
    // Swagger UI's styles applied (its style sheet came from the server, past the CSP).
    out.styled = await page.$eval('.swagger-ui', (e) => getComputedStyle(e).fontFamily);
    // One operation opened: its parameters and responses render too.
    await page.click('#operations-Files-listFiles .opblock-summary');
    await page.waitForSelector('#operations-Files-listFiles .responses-table', {timeout: 10000});
    out.listFilesResponses = await page.$$eval('#operations-Files-listFiles .responses-table .response-col_status',
                                               (cells) => cells.map((c) => c.textContent.trim()));
    if (cfg.screenshot) await page.screenshot({path: cfg.screenshot, fullPage: false});
    // The wall: a request beyond loopback is refused, and recorded.
    out.outside = await page.evaluate(() => fetch('http://example.com/cu-probe').then(
      () => 'reached', () => 'refused'));
  } finally {
    out.blocked = browser.blocked;
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`docs.js: ${e.stack || e}\n`);
  process.exit(1);
});
