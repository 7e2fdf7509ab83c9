#!/usr/bin/env node
// tus_upload.js - one upload with tus-js-client (the npm package, unchanged), driven by the
// integration tests (tests/integration/test_tus_client.py) and the benchmark (bench/).
//
//   node tus_upload.js '<options as JSON>'
//
// Options:
//   endpoint         the tus collection URL ("http://127.0.0.1:PORT/files/")
//   file             the file to upload (read as an fs.ReadStream, so that tus-js-client
//                    slices it from disk for parallel uploads)
//   apiKey           sent as X-API-Key, or with bearer: true as Authorization: Bearer
//   chunkSize        bytes per PATCH (default: the whole rest in one)
//   parallelUploads  partial uploads at once, joined by a final one (default 1)
//   metadata         Upload-Metadata (an object)
//   urlStorage       a JSON file for tus-js-client's FileUrlStorage: the upload's URL is kept
//                    there under the file's fingerprint, and resume: true resumes from it
//   resume           find the previous upload of this file in urlStorage and resume it
//   uploadUrl        resume this upload URL (tus-js-client's uploadUrl option)
//   abortAt          abort once this many bytes are acknowledged (terminate: true also
//                    terminates the upload, as abort(true) does)
//   retryDelays      tus-js-client's retryDelays (default [] : no retries, failures show)
//   buffer           read the whole file into memory first and upload that Buffer (the
//                    benchmark: the client then costs little, so the servers show; the clock
//                    starts after the read)
//
// Prints one JSON line: {ok, url, bytes, total, resumedFrom, previous, aborted, terminated,
// error, status, seconds}; exits 0 when the run did what was asked.
'use strict';

const fs = require('fs');
const tus = require('tus-js-client');

const opts = JSON.parse(process.argv[2] || '{}');
let started = process.hrtime.bigint();
const out = {ok: false, url: null, bytes: 0, total: 0, resumedFrom: null, previous: 0,
             aborted: false, terminated: false, error: null, status: null, seconds: 0};

function finish(code) {
  out.seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(code);
}

const headers = {};
if (opts.apiKey) {
  if (opts.bearer) headers.Authorization = 'Bearer ' + opts.apiKey;
  else headers['X-API-Key'] = opts.apiKey;
}

const options = {
  endpoint: opts.endpoint,
  headers,
  metadata: opts.metadata || {},
  retryDelays: opts.retryDelays || [],
  parallelUploads: opts.parallelUploads || 1,
  storeFingerprintForResuming: Boolean(opts.urlStorage),
  removeFingerprintOnSuccess: Boolean(opts.urlStorage),
  onAfterResponse(req, res) {
    // The offset the server reported when the upload was looked up: where a resume starts.
    if (req.getMethod() === 'HEAD' && out.resumedFrom === null) {
      const offset = res.getHeader('Upload-Offset');
      if (offset != null) out.resumedFrom = Number(offset);
    }
  },
  // A parallel upload reports its parts' progress together here, a single one its chunks
  // below: either may call for the abort.
  onProgress(sent) {
    if ((opts.parallelUploads || 1) > 1) maybeAbort(sent);
  },
  onChunkComplete(chunk, accepted) {
    out.bytes = accepted;
    maybeAbort(accepted);
  },
  onSuccess() {
    out.ok = true;
    out.url = upload.url;
    out.bytes = out.total;
    finish(0);
  },
  onError(err) {
    out.error = String(err && err.message || err);
    const res = err && err.originalResponse;
    if (res) out.status = res.getStatus();
    finish(1);
  },
};
if (opts.chunkSize) options.chunkSize = opts.chunkSize;
if (opts.uploadUrl) options.uploadUrl = opts.uploadUrl;
if (opts.urlStorage) options.urlStorage = new tus.FileUrlStorage(opts.urlStorage);

function maybeAbort(bytes) {
  if (opts.abortAt == null || bytes < opts.abortAt || out.aborted) return;
  out.aborted = true;
  out.bytes = bytes;
  // The URL a client keeps (a parallel upload has only its parts' until the final exists).
  out.url = upload.url;
  upload.abort(Boolean(opts.terminate)).then(() => {
    out.terminated = Boolean(opts.terminate);
    out.ok = true;
    finish(0);
  }, (err) => {
    out.error = String(err && err.message || err);
    finish(1);
  });
}

out.total = fs.statSync(opts.file).size;
const input = opts.buffer ? fs.readFileSync(opts.file) : fs.createReadStream(opts.file);
started = process.hrtime.bigint();
const upload = new tus.Upload(input, options);

if (opts.resume) {
  upload.findPreviousUploads().then((previous) => {
    out.previous = previous.length;
    if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  }, (err) => {
    out.error = String(err && err.message || err);
    finish(1);
  });
} else {
  upload.start();
}
