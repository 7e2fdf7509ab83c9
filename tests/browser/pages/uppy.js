// uppy.js - the page side of the Uppy browser test: Uppy (the bundle from the npm package,
// unchanged) with its tus plugin, on an origin other than the server's, so that every
// request goes through the browser's CORS checks.
'use strict';

// opts: {endpoint, apiKey, chunkSize, limit, files: [{name, size, seed, type}]}. Resolves
// with each file's outcome: its upload URL (read from the Location header, which CORS must
// expose), the SHA-256 of the bytes given to Uppy, or the error.
async function cuUppyUpload(opts) {
  const uppy = new Uppy.Uppy({autoProceed: false});
  uppy.use(Uppy.Tus, {
    endpoint: opts.endpoint,
    headers: {'X-API-Key': opts.apiKey},
    chunkSize: opts.chunkSize,
    limit: opts.limit || 2,
    retryDelays: [],
    removeFingerprintOnSuccess: true,
  });
  const digests = {};
  for (const f of opts.files) {
    const bytes = cuMakeBytes(f.size, f.seed);
    digests[f.name] = await cuSha256(bytes);
    uppy.addFile({name: f.name, type: f.type, data: new Blob([bytes], {type: f.type})});
  }
  uppy.on('progress', (p) => cuStatus(`Uppy: ${p}%`));
  const result = await uppy.upload();
  cuStatus('done');
  return {
    successful: result.successful.map((f) => ({name: f.name, size: f.size, uploadURL: f.uploadURL,
                                               sha256: digests[f.name], progress: f.progress})),
    failed: result.failed.map((f) => ({name: f.name, error: String(f.error)})),
  };
}
