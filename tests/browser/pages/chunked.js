// chunked.js - the page side of the flow.js / resumable.js browser tests.
//
// cuUpload(opts) makes a file in the page (the same bytes for the same seed, so a reloaded
// page makes it again and the library resumes it under the same identifier), uploads it
// with the library named, unchanged but for its options, and resolves with the SHA-256 the
// page computed of the bytes it gave the library and the library's verdict (the test's web
// server keeps every reply).
'use strict';

// opts: {library: "flow" | "resumable", name, relativePath, size, seed, chunkSize,
// simultaneousUploads, forceChunkSize, apiKey, target}
async function cuUpload(opts) {
  const bytes = cuMakeBytes(opts.size, opts.seed);
  const sha256 = await cuSha256(bytes);
  const file = new File([bytes], opts.name, {type: opts.type || ''});
  if (opts.relativePath) file.relativePath = opts.relativePath;
  const common = {
    target: opts.target, chunkSize: opts.chunkSize, forceChunkSize: !!opts.forceChunkSize,
    simultaneousUploads: opts.simultaneousUploads || 3, testChunks: true,
    headers: {'X-API-Key': opts.apiKey},
  };
  const outcome = await new Promise((resolve) => {
    if (opts.library === 'flow') {
      const flow = new Flow(common);
      flow.on('fileProgress', (f) => cuStatus(`flow.js: ${Math.round(f.progress() * 100)}%`));
      flow.on('fileSuccess', (f, message) => resolve({ok: true, message, identifier: f.uniqueIdentifier}));
      flow.on('fileError', (f, message) => resolve({ok: false, message, identifier: f.uniqueIdentifier}));
      flow.on('filesSubmitted', () => flow.upload());
      flow.addFile(file);
    } else {
      const r = new Resumable(common);
      r.on('fileProgress', (f) => cuStatus(`resumable.js: ${Math.round(f.progress() * 100)}%`));
      r.on('fileSuccess', (f, message) => resolve({ok: true, message, identifier: f.uniqueIdentifier}));
      r.on('fileError', (f, message) => resolve({ok: false, message, identifier: f.uniqueIdentifier}));
      r.on('fileAdded', () => r.upload());
      r.addFile(file);
    }
  });
  cuStatus(outcome.ok ? 'done' : 'failed: ' + outcome.message);
  return Object.assign(outcome, {sha256, size: opts.size});
}
