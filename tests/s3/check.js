#!/usr/bin/env node
// Independent S3 client for the tests (AWS SDK v3, path-style), one call per run:
//   node check.js --endpoint URL --access-key K --secret S [--region R] [--session-token T] CMD ARGS...
// Commands (JSON on stdout; on an S3 error exit 1 with {"error": code, "status": http, "message"}):
//   get-object B KEY FILE           -> writes the body to FILE; {ContentLength, ETag}
//   head-object B KEY               -> {ContentLength, ETag}
//   put-object B KEY FILE           -> {ETag}
//   list-objects B [PREFIX]         -> [{Key, Size}]
//   list-multipart-uploads B [PREFIX] -> [{Key, UploadId, Initiated}]
//   create-multipart-upload B KEY   -> {UploadId}
//   upload-part B KEY ID N FILE     -> {ETag}
//   list-parts B KEY ID             -> [{PartNumber, Size, ETag}]
//   complete-multipart-upload B KEY ID ETAG,ETAG,... -> {ETag}
//   abort-multipart-upload B KEY ID -> {}
'use strict';

process.removeAllListeners('warning'); // the SDK's notice about future Node versions
const fs = require('fs');
const s3 = require('@aws-sdk/client-s3');

const argv = process.argv.slice(2);
const opt = { region: 'us-east-1' };
while (argv[0] && argv[0].startsWith('--')) {
  opt[argv.shift().slice(2)] = argv.shift();
}
const [cmd, ...args] = argv;
const client = new s3.S3Client({
  endpoint: opt.endpoint, region: opt.region, forcePathStyle: true, maxAttempts: 1,
  requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  credentials: { accessKeyId: opt['access-key'], secretAccessKey: opt.secret, sessionToken: opt['session-token'] },
});

async function all(makeCommand, pick, token) {
  const out = [];
  let input = {};
  for (;;) {
    const r = await client.send(makeCommand(input));
    out.push(...pick(r));
    const next = token(r);
    if (!next) return out;
    input = next;
  }
}

const commands = {
  async 'get-object'(Bucket, Key, file) {
    const r = await client.send(new s3.GetObjectCommand({ Bucket, Key }));
    fs.writeFileSync(file, Buffer.from(await r.Body.transformToByteArray()));
    return { ContentLength: r.ContentLength, ETag: r.ETag };
  },
  async 'head-object'(Bucket, Key) {
    const r = await client.send(new s3.HeadObjectCommand({ Bucket, Key }));
    return { ContentLength: r.ContentLength, ETag: r.ETag };
  },
  async 'put-object'(Bucket, Key, file) {
    const r = await client.send(new s3.PutObjectCommand({ Bucket, Key, Body: fs.readFileSync(file) }));
    return { ETag: r.ETag };
  },
  'list-objects': (Bucket, Prefix) => all(
    i => new s3.ListObjectsV2Command({ Bucket, Prefix, ...i }),
    r => (r.Contents || []).map(o => ({ Key: o.Key, Size: o.Size })),
    r => r.IsTruncated && { ContinuationToken: r.NextContinuationToken }),
  'list-multipart-uploads': (Bucket, Prefix) => all(
    i => new s3.ListMultipartUploadsCommand({ Bucket, Prefix, ...i }),
    r => (r.Uploads || []).map(u => ({ Key: u.Key, UploadId: u.UploadId, Initiated: u.Initiated })),
    r => r.IsTruncated && { KeyMarker: r.NextKeyMarker, UploadIdMarker: r.NextUploadIdMarker }),
  async 'create-multipart-upload'(Bucket, Key) {
    const r = await client.send(new s3.CreateMultipartUploadCommand({ Bucket, Key }));
    return { UploadId: r.UploadId };
  },
  async 'upload-part'(Bucket, Key, UploadId, n, file) {
    const r = await client.send(new s3.UploadPartCommand({ Bucket, Key, UploadId, PartNumber: Number(n), Body: fs.readFileSync(file) }));
    return { ETag: r.ETag };
  },
  'list-parts': (Bucket, Key, UploadId) => all(
    i => new s3.ListPartsCommand({ Bucket, Key, UploadId, ...i }),
    r => (r.Parts || []).map(p => ({ PartNumber: p.PartNumber, Size: p.Size, ETag: p.ETag })),
    r => r.IsTruncated && { PartNumberMarker: r.NextPartNumberMarker }),
  async 'complete-multipart-upload'(Bucket, Key, UploadId, etags) {
    const Parts = etags.split(',').map((ETag, i) => ({ ETag, PartNumber: i + 1 }));
    const r = await client.send(new s3.CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts } }));
    return { ETag: r.ETag };
  },
  async 'abort-multipart-upload'(Bucket, Key, UploadId) {
    await client.send(new s3.AbortMultipartUploadCommand({ Bucket, Key, UploadId }));
    return {};
  },
};

if (!commands[cmd]) {
  console.error('usage: check.js --endpoint URL --access-key K --secret S [--region R] ' + Object.keys(commands).join('|') + ' ARGS...');
  process.exit(2);
}
commands[cmd](...args).then(
  out => { process.stdout.write(JSON.stringify(out) + '\n'); },
  err => {
    const status = err.$metadata && err.$metadata.httpStatusCode;
    if (!status) { console.error(err && err.stack || err); process.exit(3); }
    process.stdout.write(JSON.stringify({ error: err.Code || err.name, status, message: err.message }) + '\n');
    process.exit(1);
  });
