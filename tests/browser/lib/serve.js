// serve.js - the web server a browser test loads its page from.
//
// Serves a fixed set of files (the page, its scripts, the libraries from tests/js) and, for
// the path prefixes given, passes requests on to the server under test, streaming both ways,
// so that the page and the API share one origin (no CORS needed). Every request passed on is
// logged: method, path, query, status, the chunk number a flow.js or resumable.js request
// names (from the query, or the first bytes of its form), the first KiB of the reply and the
// phase the test was in (set with setPhase). Nothing here alters a request or a reply.
'use strict';

const fs = require('fs');
const http = require('http');

const TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
               '.css': 'text/css; charset=utf-8', '.json': 'application/json'};
const SNIFF_BYTES = 4096;   // a form's fields come first: the chunk number is in here
const REPLY_BYTES = 1024;

function typeOf(file) {
  const dot = file.lastIndexOf('.');
  return TYPES[file.slice(dot)] || 'application/octet-stream';
}

// The chunk number a flow.js / resumable.js request names, or null.
function chunkNumber(query, head) {
  const q = query.get('flowChunkNumber') || query.get('resumableChunkNumber');
  if (q) return Number(q);
  const m = /name="(?:flow|resumable)ChunkNumber"\r\n\r\n(\d+)\r\n/.exec(head);
  return m ? Number(m[1]) : null;
}

// files: {"/path": "/absolute/file"}; proxy: {target: "http://127.0.0.1:PORT", prefixes:
// ["/api/", ...]} or null; port: where to listen (0: any free port, e.g. when the origin need
// not be known beforehand). Resolves to {port, origin, log, setPhase(name), close()}.
function start({files = {}, proxy = null, port = 0}) {
  const log = [];
  let phase = 'start';
  const target = proxy ? new URL(proxy.target) : null;
  const agent = new http.Agent({keepAlive: true, maxSockets: 64});

  function pass(req, res, url) {
    const entry = {method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams),
                   phase, chunk: null, status: null, reply: '', error: null};
    log.push(entry);
    let head = '';
    const up = http.request({host: target.hostname, port: target.port, method: req.method,
                             path: req.url, headers: req.headers, agent}, (upRes) => {
      entry.status = upRes.statusCode;
      res.writeHead(upRes.statusCode, upRes.headers);
      upRes.on('data', (d) => {
        if (entry.reply.length < REPLY_BYTES) entry.reply += d.toString('utf8', 0, REPLY_BYTES);
      });
      upRes.pipe(res);
    });
    up.on('error', (e) => {
      entry.error = e.message;
      if (!res.headersSent) res.writeHead(502, {'Content-Type': 'text/plain'});
      res.end();
    });
    req.on('data', (d) => {
      if (head.length < SNIFF_BYTES) head += d.toString('latin1', 0, SNIFF_BYTES);
    });
    req.on('end', () => { entry.chunk = chunkNumber(url.searchParams, head); });
    // The browser went away (a reload): the server must see the request cut off too.
    req.on('aborted', () => { entry.error = 'aborted by the client'; up.destroy(); });
    res.on('close', () => { if (!res.writableFinished) up.destroy(); });
    entry.chunk = chunkNumber(url.searchParams, '');
    req.pipe(up);
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (target && proxy.prefixes.some((p) => url.pathname.startsWith(p))) return pass(req, res, url);
    const file = files[url.pathname];
    if (!file || req.method !== 'GET') {
      res.writeHead(404, {'Content-Type': 'text/plain'});
      return res.end('not found');
    }
    fs.readFile(file, (err, body) => {
      if (err) {
        res.writeHead(500, {'Content-Type': 'text/plain'});
        return res.end(String(err));
      }
      res.writeHead(200, {'Content-Type': typeOf(file), 'Cache-Control': 'no-store'});
      res.end(body);
    });
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const bound = server.address().port;
      resolve({
        port: bound, origin: `http://127.0.0.1:${bound}`, log,
        setPhase(name) { phase = name; },
        close() {
          agent.destroy();
          server.closeAllConnections();
          return new Promise((r) => server.close(r));
        },
      });
    });
  });
}

module.exports = {start};
