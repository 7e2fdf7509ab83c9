#!/usr/bin/env node
// S3 test backend: s3rver 3.7.1 behind a small front server that
//   1. verifies every request's SigV4 Authorization header with AWS's own signer
//      (@smithy/signature-v4) and the payload against x-amz-content-sha256,
//   2. adds what s3rver lacks, written to the AWS S3 API reference over s3rver's own
//      storage of multipart uploads (<dir>/<bucket>/._S3rver_uploads/<uploadId>/ holding
//      `key`, `metadata` and one file `<n>` plus `<n>.md5` per part):
//        ListMultipartUploads  GET    /<bucket>?uploads
//        ListParts             GET    /<bucket>/<key>?uploadId=X
//        AbortMultipartUpload  DELETE /<bucket>/<key>?uploadId=X
//        UploadPartCopy        PUT    /<bucket>/<key>?partNumber=N&uploadId=X  x-amz-copy-source
//      and the checks s3rver skips on UploadPart / CompleteMultipartUpload
//      (NoSuchUpload, part number 1..10000, InvalidPartOrder, InvalidPart, EntityTooSmall)
//      and on GetObject (If-Match: 412 PreconditionFailed),
//   3. verifies presigned GET/HEAD URLs (SigV4 in the query: X-Amz-Algorithm, -Credential,
//      -Date, -Expires, -SignedHeaders=host, -Signature, -Security-Token) by presigning the
//      same request again with AWS's signer, refuses expired ones (403 AccessDenied "Request
//      has expired"), and answers them with the response-content-type/-disposition they
//      carry (s3rver takes those only from requests it authenticates itself),
//   4. forwards everything else to s3rver unchanged.
//
// usage: node launcher.js --port P --dir D --bucket B --access-key K --secret S
//                         [--region us-east-1] [--session-token T] [--slow-ms N] [--fail-parts N]
//                         [--long-etags N] [--cut-gets N]
// --slow-ms N delays every UploadPart answer by N ms (a slow backend); --fail-parts N answers
// the first N UploadPart requests 503 SlowDown (a throttling backend); --long-etags N gives
// every part an ETag of N characters (S3-compatible stores may send long ones), with
// characters XML must escape, and maps them back to s3rver's when the client lists them in
// CompleteMultipartUpload (so an ETag the client cut or mangled is refused as InvalidPart);
// --cut-gets N closes the connection of each of the first N GetObject answers after 1 MiB of
// its body (a network that breaks off long downloads).
// GET /_launcher/stats (unsigned, not S3) answers {"accepted": TCP connections accepted,
// "connections": of those, the ones that carried S3 requests, "requests": S3 requests}: what a
// client's connection reuse is measured by.
// Prints "ready" on stdout once listening; one line per request on stderr; exits 0 on SIGTERM.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const { SignatureV4 } = require('@smithy/signature-v4');
const { Sha256 } = require('@aws-crypto/sha256-js');

// ------------------------------------------------------------------ options
const opt = { region: 'us-east-1', slowMs: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
  if (!['port', 'dir', 'bucket', 'accessKey', 'secret', 'region', 'sessionToken', 'slowMs', 'failParts', 'longEtags', 'cutGets'].includes(name) || argv[i + 1] === undefined) {
    console.error('usage: launcher.js --port P --dir D --bucket B --access-key K --secret S [--region R] [--session-token T] [--slow-ms N] [--fail-parts N] [--long-etags N] [--cut-gets N]');
    process.exit(2);
  }
  opt[name] = argv[i + 1];
}
for (const k of ['port', 'dir', 'bucket', 'accessKey', 'secret']) {
  if (!opt[k]) { console.error('launcher.js: --' + k.replace(/[A-Z]/g, c => '-' + c.toLowerCase()) + ' is required'); process.exit(2); }
}
opt.slowMs = Number(opt.slowMs) || 0;
opt.failParts = Number(opt.failParts) || 0;
opt.longEtags = Number(opt.longEtags) || 0;
opt.cutGets = Number(opt.cutGets) || 0;
const CUT_AFTER = 1024 * 1024;
const OWNER = { id: String(AWSAccount.DUMMY_ACCOUNT.id), name: AWSAccount.DUMMY_ACCOUNT.displayName };
const MIN_PART = 5 * 1024 * 1024;

// ------------------------------------------------------------------ small helpers
const xmlEsc = s => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
const xmlUnesc = s => s.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#34;/g, '"').replace(/&amp;/g, '&');
const el = (name, v) => `<${name}>${Array.isArray(v) ? v.join('') : xmlEsc(v)}</${name}>`;
const isoTime = d => d.toISOString();
const sleep = ms => new Promise(r => setTimeout(r, ms));
// UriEncode of the AWS SigV4 reference: everything but A-Z a-z 0-9 - _ . ~ is %XX-encoded
const uriEncode = s => encodeURIComponent(s).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());
const decode = s => { try { return decodeURIComponent(s); } catch (e) { return s; } };

class S3Err {
  constructor(status, code, message, extra = {}) { Object.assign(this, { status, code, message, extra }); }
}

function sendXml(req, res, status, body, headers = {}) {
  const buf = Buffer.from(body ? '<?xml version="1.0" encoding="UTF-8"?>\n' + body : '');
  res.writeHead(status, { 'x-amz-request-id': crypto.randomBytes(8).toString('hex').toUpperCase(),
    ...(body ? { 'Content-Type': 'application/xml' } : {}), 'Content-Length': buf.length, ...headers });
  res.end(req.method === 'HEAD' ? undefined : buf);
}

function sendError(req, res, e) {
  const extra = Object.entries(e.extra).map(([k, v]) => el(k, v)).join('');
  sendXml(req, res, e.status, `<Error>${el('Code', e.code)}${el('Message', e.message)}${extra}</Error>`);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', c => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// ------------------------------------------------------------------ SigV4 verification
const SIGV4_RE = /^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})\s*$/;

// Throws S3Err unless the request carries a valid SigV4 Authorization header for our key.
async function verifySignature(req, rawPath, query) {
  const auth = req.headers.authorization;
  if (!auth) throw new S3Err(403, 'AccessDenied', 'Access Denied (this server accepts only SigV4 Authorization headers)');
  const m = SIGV4_RE.exec(auth);
  if (!m) throw new S3Err(400, 'AuthorizationHeaderMalformed', 'The authorization header is malformed.');
  const [accessKey, scopeDate, region, service, terminator] = m[1].split('/');
  if (accessKey !== opt.accessKey) {
    throw new S3Err(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.', { AWSAccessKeyId: accessKey });
  }
  if (region !== opt.region || service !== 's3' || terminator !== 'aws4_request') {
    throw new S3Err(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; the region '${region}' is wrong; expecting '${opt.region}'`, { Region: opt.region });
  }
  const amzDate = req.headers['x-amz-date'] || '';
  const dm = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  const when = dm ? new Date(Date.UTC(+dm[1], dm[2] - 1, +dm[3], +dm[4], +dm[5], +dm[6])) : new Date(req.headers.date || NaN);
  if (isNaN(when)) throw new S3Err(403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
  if (Math.abs(Date.now() - when) > 15 * 60 * 1000) {
    throw new S3Err(403, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.',
      { RequestTime: amzDate, ServerTime: new Date().toISOString() });
  }
  const payload = req.headers['x-amz-content-sha256'];
  if (!payload) throw new S3Err(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  if (payload !== 'UNSIGNED-PAYLOAD' && !/^[0-9a-f]{64}$/.test(payload)) {
    if (payload.startsWith('STREAMING-')) throw new S3Err(501, 'NotImplemented', 'aws-chunked payload signing is not supported by this test server');
    throw new S3Err(400, 'InvalidArgument', 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 value.',
      { ArgumentName: 'x-amz-content-sha256', ArgumentValue: payload });
  }

  const signed = m[2].split(';');
  const unsigned = Object.keys(req.headers).filter(h => h.startsWith('x-amz-') && !signed.includes(h));
  if (unsigned.length) {
    throw new S3Err(403, 'AccessDenied', 'There were headers present in the request which were not signed',
      { HeadersNotSigned: unsigned.join(', ') });
  }
  if (opt.sessionToken !== undefined) { // temporary credentials: the token must come along, signed
    const token = req.headers['x-amz-security-token'];
    if (token === undefined) {
      throw new S3Err(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.', { AWSAccessKeyId: accessKey });
    }
    if (token !== opt.sessionToken) throw new S3Err(400, 'InvalidToken', 'The provided token is malformed or otherwise invalid.');
  }

  // Re-sign what was received: only the headers named in SignedHeaders, the payload hash
  // from x-amz-content-sha256, S3's canonical URI (each path segment decoded, then
  // UriEncoded once) and the decoded query.
  const headers = {};
  for (const h of signed) headers[h] = req.headers[h] === undefined ? '' : String(req.headers[h]);
  headers['x-amz-content-sha256'] = payload; // the signer reads the payload hash from here
  const signer = new SignatureV4({
    credentials: { accessKeyId: opt.accessKey, secretAccessKey: opt.secret },
    region: opt.region, service: 's3', sha256: Sha256, uriEscapePath: false, applyChecksum: false,
  });
  const signedSet = new Set(signed);
  const resigned = await signer.sign(
    { method: req.method, protocol: 'http:', hostname: String(req.headers.host || ''),
      path: rawPath.split('/').map(s => uriEncode(decode(s))).join('/'), query, headers },
    { signingDate: when, signableHeaders: signedSet,
      unsignableHeaders: new Set(['x-amz-content-sha256', 'x-amz-date'].filter(h => !signedSet.has(h))) });
  const expected = /Signature=([0-9a-f]{64})/.exec(resigned.headers.authorization)[1];
  const sameHeaders = /SignedHeaders=([^,]+)/.exec(resigned.headers.authorization)[1] === m[2];
  if (!sameHeaders || scopeDate !== amzDate.slice(0, 8) ||
      !crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(m[3]))) {
    throw new S3Err(403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      { AWSAccessKeyId: accessKey, SignatureProvided: m[3] });
  }
}

// Throws S3Err unless the request is a valid, unexpired presigned GET or HEAD for our key.
const PRESIGN_PARAMS = ['X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires',
  'X-Amz-SignedHeaders', 'X-Amz-Signature', 'X-Amz-Security-Token'];
async function verifyPresigned(req, rawPath, query) {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw new S3Err(403, 'AccessDenied', 'Presigned URLs here are for GET and HEAD');
  if (req.headers.authorization) {
    throw new S3Err(400, 'InvalidArgument', 'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified');
  }
  for (const k of PRESIGN_PARAMS) {
    if (Array.isArray(query[k])) throw new S3Err(400, 'InvalidArgument', `${k} appears more than once`);
  }
  if (query['X-Amz-Algorithm'] !== 'AWS4-HMAC-SHA256') throw new S3Err(400, 'AuthorizationQueryParametersError', 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');
  const cred = String(query['X-Amz-Credential'] || '').split('/');
  if (cred.length !== 5) throw new S3Err(400, 'AuthorizationQueryParametersError', 'Error parsing the X-Amz-Credential parameter');
  const [accessKey, scopeDate, region, service, terminator] = cred;
  if (accessKey !== opt.accessKey) {
    throw new S3Err(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.', { AWSAccessKeyId: accessKey });
  }
  if (region !== opt.region || service !== 's3' || terminator !== 'aws4_request') {
    throw new S3Err(400, 'AuthorizationQueryParametersError', `Error parsing the X-Amz-Credential parameter; the region '${region}' is wrong; expecting '${opt.region}'`);
  }
  const amzDate = String(query['X-Amz-Date'] || '');
  const dm = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!dm || scopeDate !== amzDate.slice(0, 8)) throw new S3Err(400, 'AuthorizationQueryParametersError', 'X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd\'T\'HHmmss\'Z\'"');
  const when = new Date(Date.UTC(+dm[1], dm[2] - 1, +dm[3], +dm[4], +dm[5], +dm[6]));
  const expires = String(query['X-Amz-Expires'] || '');
  if (!/^\d+$/.test(expires) || +expires < 1 || +expires > 604800) {
    throw new S3Err(400, 'AuthorizationQueryParametersError', 'X-Amz-Expires must be a number of seconds from 1 to 604800');
  }
  if (when - Date.now() > 15 * 60 * 1000) throw new S3Err(403, 'AccessDenied', 'Request is not valid yet');
  if (Date.now() > +when + 1000 * +expires) {
    throw new S3Err(403, 'AccessDenied', 'Request has expired', { 'X-Amz-Expires': expires, Expires: new Date(+when + 1000 * +expires).toISOString(), ServerTime: new Date().toISOString() });
  }
  if (query['X-Amz-SignedHeaders'] !== 'host') throw new S3Err(403, 'AccessDenied', 'This test server takes presigned URLs that sign the host header only');
  if (opt.sessionToken !== undefined && query['X-Amz-Security-Token'] !== opt.sessionToken) {
    throw new S3Err(403, 'InvalidToken', 'The provided token is malformed or otherwise invalid.');
  }
  const rest = {};
  for (const [k, v] of Object.entries(query)) if (!PRESIGN_PARAMS.includes(k)) rest[k] = v;
  const signer = new SignatureV4({
    credentials: { accessKeyId: opt.accessKey, secretAccessKey: opt.secret, sessionToken: opt.sessionToken },
    region: opt.region, service: 's3', sha256: Sha256, uriEscapePath: false, applyChecksum: false,
  });
  const presigned = await signer.presign(
    { method: req.method, protocol: 'http:', hostname: String(req.headers.host || ''),
      path: rawPath.split('/').map(s => uriEncode(decode(s))).join('/'), query: rest,
      headers: { host: String(req.headers.host || ''), 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } },
    { signingDate: when, expiresIn: +expires, signableHeaders: new Set(['host']),
      unhoistableHeaders: new Set(['x-amz-content-sha256']), unsignableHeaders: new Set(['x-amz-content-sha256']) });
  const given = String(query['X-Amz-Signature'] || '');
  const expected = presigned.query['X-Amz-Signature'];
  if (!/^[0-9a-f]{64}$/.test(given) || !crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(given))) {
    throw new S3Err(403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
      { AWSAccessKeyId: accessKey, SignatureProvided: given });
  }
  return rest;
}

// ------------------------------------------------------------------ s3rver's multipart storage
const bucketDir = bucket => path.join(opt.dir, bucket);
const uploadsDir = bucket => path.join(bucketDir(bucket), '._S3rver_uploads');

async function requireBucket(bucket) {
  const st = await fs.promises.stat(bucketDir(bucket)).catch(() => null);
  if (!bucket || !st || !st.isDirectory()) {
    throw new S3Err(404, 'NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket });
  }
}

// One in-progress multipart upload, or null. An upload is its directory with a `key` file.
async function readUpload(bucket, uploadId) {
  if (!/^[A-Za-z0-9_-]+$/.test(uploadId || '')) return null;
  const dir = path.join(uploadsDir(bucket), uploadId);
  try {
    const [key, st] = await Promise.all([fs.promises.readFile(path.join(dir, 'key'), 'utf8'),
      fs.promises.stat(path.join(dir, 'key'))]);
    return { uploadId, key, dir, initiated: st.mtime };
  } catch (e) {
    return null;
  }
}

async function requireUpload(bucket, key, uploadId) {
  const up = await readUpload(bucket, uploadId);
  if (!up || up.key !== key) {
    throw new S3Err(404, 'NoSuchUpload',
      'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      { UploadId: uploadId || '' });
  }
  return up;
}

async function readParts(up) {
  const names = (await fs.promises.readdir(up.dir).catch(() => [])).filter(n => /^\d+$/.test(n));
  const parts = await Promise.all(names.map(async n => {
    const [st, md5] = await Promise.all([fs.promises.stat(path.join(up.dir, n)),
      fs.promises.readFile(path.join(up.dir, n + '.md5'), 'utf8').catch(() => null)]);
    return md5 === null ? null : { number: Number(n), size: st.size, etag: '"' + md5.trim() + '"', modified: st.mtime };
  }));
  return parts.filter(Boolean).sort((a, b) => a.number - b.number);
}

const ownerXml = name => el(name, [el('ID', OWNER.id), el('DisplayName', OWNER.name)]);

// ListMultipartUploads: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html
async function listMultipartUploads(req, res, bucket, q) {
  await requireBucket(bucket);
  const prefix = q.prefix || '', delimiter = q.delimiter || '';
  const keyMarker = q['key-marker'] || '', idMarker = keyMarker ? q['upload-id-marker'] || '' : '';
  const maxUploads = Math.min(1000, q['max-uploads'] === undefined ? 1000 : Number(q['max-uploads']));
  if (!Number.isInteger(maxUploads) || maxUploads < 0) {
    throw new S3Err(400, 'InvalidArgument', 'max-uploads must be an integer from 0 to 2147483647', { ArgumentName: 'max-uploads' });
  }
  const enc = q['encoding-type'] === 'url' ? uriEncode : s => s;
  const ids = await fs.promises.readdir(uploadsDir(bucket)).catch(() => []);
  const uploads = (await Promise.all(ids.map(id => readUpload(bucket, id)))).filter(Boolean)
    .filter(u => u.key.startsWith(prefix))
    .filter(u => !keyMarker || u.key > keyMarker || (idMarker && u.key === keyMarker && u.uploadId > idMarker))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.initiated - b.initiated || (a.uploadId < b.uploadId ? -1 : 1)));
  const entries = [], prefixes = new Set();
  let truncated = false, last = null;
  for (const u of uploads) {
    const i = delimiter ? u.key.indexOf(delimiter, prefix.length) : -1;
    const common = i >= 0 ? u.key.slice(0, i + delimiter.length) : null;
    if (common && prefixes.has(common)) continue;
    if (entries.length + prefixes.size >= maxUploads) { truncated = true; break; }
    if (common) prefixes.add(common); else entries.push(u);
    last = u;
  }
  const body = el('ListMultipartUploadsResult', [
    el('Bucket', bucket), el('KeyMarker', enc(keyMarker)), el('UploadIdMarker', idMarker),
    el('NextKeyMarker', truncated && last ? enc(last.key) : ''), el('NextUploadIdMarker', truncated && last ? last.uploadId : ''),
    ...(q.prefix !== undefined ? [el('Prefix', enc(prefix))] : []), ...(delimiter ? [el('Delimiter', enc(delimiter))] : []),
    el('MaxUploads', String(maxUploads)), ...(q['encoding-type'] ? [el('EncodingType', q['encoding-type'])] : []),
    el('IsTruncated', String(truncated)),
    ...entries.map(u => el('Upload', [el('Key', enc(u.key)), el('UploadId', u.uploadId), ownerXml('Initiator'),
      ownerXml('Owner'), el('StorageClass', 'STANDARD'), el('Initiated', isoTime(u.initiated))])),
    ...[...prefixes].map(p => el('CommonPrefixes', [el('Prefix', enc(p))])),
  ]).replace('<ListMultipartUploadsResult>', '<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">');
  sendXml(req, res, 200, body);
}

// ListParts: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListParts.html
async function listParts(req, res, bucket, key, q) {
  await requireBucket(bucket);
  const up = await requireUpload(bucket, key, q.uploadId);
  const marker = Number(q['part-number-marker'] || 0);
  const maxParts = Math.min(1000, q['max-parts'] === undefined ? 1000 : Number(q['max-parts']));
  if (!Number.isInteger(marker) || marker < 0 || !Number.isInteger(maxParts) || maxParts < 0) {
    throw new S3Err(400, 'InvalidArgument', 'part-number-marker and max-parts must be non-negative integers');
  }
  const after = (await readParts(up)).filter(p => p.number > marker);
  const parts = after.slice(0, maxParts);
  const truncated = after.length > parts.length;
  const body = el('ListPartsResult', [
    el('Bucket', bucket), el('Key', key), el('UploadId', up.uploadId), ownerXml('Initiator'), ownerXml('Owner'),
    el('StorageClass', 'STANDARD'), el('PartNumberMarker', String(marker)),
    el('NextPartNumberMarker', String(parts.length ? parts[parts.length - 1].number : 0)),
    el('MaxParts', String(maxParts)), el('IsTruncated', String(truncated)),
    ...parts.map(p => el('Part', [el('PartNumber', String(p.number)), el('LastModified', isoTime(p.modified)),
      el('ETag', p.etag), el('Size', String(p.size))])),
  ]).replace('<ListPartsResult>', '<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">');
  sendXml(req, res, 200, body);
}

// AbortMultipartUpload: https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html
async function abortMultipartUpload(req, res, bucket, key, q) {
  await requireBucket(bucket);
  const up = await requireUpload(bucket, key, q.uploadId);
  await fs.promises.rm(up.dir, { recursive: true, force: true });
  sendXml(req, res, 204, '');
}

function checkPartNumber(query) {
  const n = Number(query.partNumber);
  if (!Number.isInteger(n) || n < 1 || n > 10000 || !/^\d+$/.test(query.partNumber)) {
    throw new S3Err(400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive',
      { ArgumentName: 'partNumber', ArgumentValue: String(query.partNumber) });
  }
}

// UploadPartCopy: https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html
// The part is written where s3rver keeps parts (<n> and <n>.md5), from s3rver's object file.
async function uploadPartCopy(req, res, bucket, key, q) {
  await requireBucket(bucket);
  const up = await requireUpload(bucket, key, q.uploadId);
  const source = decode(String(req.headers['x-amz-copy-source'])).replace(/^\//, '');
  const slash = source.indexOf('/');
  const srcBucket = slash < 0 ? source : source.slice(0, slash), srcKey = slash < 0 ? '' : source.slice(slash + 1);
  await requireBucket(srcBucket);
  const segs = srcKey.split('/'), leaf = segs.pop();
  const objectPath = path.join(bucketDir(srcBucket), ...segs, leaf + '._S3rver_object');
  const st = srcKey && !srcKey.split('/').includes('..') ? await fs.promises.stat(objectPath).catch(() => null) : null;
  if (!st) throw new S3Err(404, 'NoSuchKey', 'The specified key does not exist.', { Key: srcKey });
  let first = 0, last = st.size - 1;
  const rangeHeader = req.headers['x-amz-copy-source-range'];
  if (rangeHeader !== undefined) {
    const m = /^bytes=(\d+)-(\d+)$/.exec(String(rangeHeader));
    if (!m) throw new S3Err(400, 'InvalidArgument', 'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy');
    if (st.size <= MIN_PART) throw new S3Err(400, 'InvalidRequest', 'The specified copy source is not supported as a byte-range copy source.');
    [first, last] = [Number(m[1]), Number(m[2])];
    if (first > last || last >= st.size) {
      throw new S3Err(416, 'InvalidRange', 'The requested range is not satisfiable', { RangeRequested: String(rangeHeader), ActualObjectSize: String(st.size) });
    }
  }
  const data = await new Promise((resolve, reject) => {
    const chunks = [];
    fs.createReadStream(objectPath, { start: first, end: last }).on('data', c => chunks.push(c)).on('end', () => resolve(Buffer.concat(chunks))).on('error', reject);
  });
  const partPath = path.join(up.dir, String(Number(q.partNumber)));
  const md5 = crypto.createHash('md5').update(data).digest('hex');
  await fs.promises.writeFile(partPath, data);
  await fs.promises.writeFile(partPath + '.md5', md5);
  const etag = opt.longEtags ? longEtag('"' + md5 + '"') : '"' + md5 + '"';
  sendXml(req, res, 200, el('CopyPartResult', [el('LastModified', isoTime(new Date())), el('ETag', etag)]));
}

// CompleteMultipartUpload's checks: https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html
async function checkComplete(bucket, key, q, body) {
  const up = await requireUpload(bucket, key, q.uploadId);
  const listed = [...body.toString('utf8').matchAll(/<Part>([\s\S]*?)<\/Part>/g)].map(([, p]) => ({
    number: Number((/<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(p) || [])[1]),
    etag: xmlUnesc((/<ETag>([\s\S]*?)<\/ETag>/.exec(p) || [, ''])[1]).trim().replace(/"/g, ''),
  }));
  if (!listed.length) {
    throw new S3Err(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
  }
  const stored = new Map((await readParts(up)).map(p => [p.number, p]));
  listed.forEach((p, i) => {
    if (i > 0 && !(p.number > listed[i - 1].number)) {
      throw new S3Err(400, 'InvalidPartOrder', 'The list of parts was not in ascending order. The parts list must be specified in order by part number.');
    }
    const s = stored.get(p.number);
    if (!s || s.etag.replace(/"/g, '') !== p.etag) {
      throw new S3Err(400, 'InvalidPart', 'One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part\'s entity tag.',
        { UploadId: up.uploadId, PartNumber: String(p.number), ETag: p.etag });
    }
    if (i < listed.length - 1 && s.size < MIN_PART) {
      throw new S3Err(400, 'EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.',
        { ProposedSize: String(s.size), MinSizeAllowed: String(MIN_PART), PartNumber: String(p.number) });
    }
  });
}

// ------------------------------------------------------------------ long ETags (--long-etags N)
const realEtagOf = new Map(); // long ETag as sent (quotes included) -> s3rver's ETag

// The long ETag standing for s3rver's etag ("<md5>"): the md5, then filler with & < > ' (legal
// in an HTTP entity tag, reserved in XML) up to opt.longEtags characters, quoted.
function longEtag(etag) {
  const md5 = String(etag).replace(/"/g, '');
  const filler = "-a&b<c>d'e".repeat(Math.ceil(opt.longEtags / 10));
  const long = '"' + (md5 + filler).slice(0, Math.max(opt.longEtags - 2, md5.length)) + '"';
  realEtagOf.set(long, '"' + md5 + '"');
  return long;
}

// A CompleteMultipartUpload body with every long ETag the client echoed back as s3rver's own.
function realEtags(body) {
  return Buffer.from(body.toString('utf8').replace(/<ETag>([\s\S]*?)<\/ETag>/g, (all, v) => {
    const real = realEtagOf.get(xmlUnesc(v).trim());
    return real ? el('ETag', real) : all;
  }));
}

// ------------------------------------------------------------------ GetObject If-Match
const hasQuery = q => Object.keys(q).length > 0;

// The object's ETag as s3rver gives it (a HEAD of the same key with the same credentials;
// s3rver itself does not check SigV4), or null when there is none.
function upstreamEtag(req) {
  return new Promise(resolve => {
    const headers = { ...req.headers };
    delete headers.range; delete headers['if-match'];
    const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: 'HEAD', path: req.url, headers, agent: upstreamAgent },
      ures => { ures.resume(); resolve(ures.statusCode === 200 ? ures.headers.etag : null); });
    up.on('error', () => resolve(null));
    up.end();
  });
}

// https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html: If-Match another ETag -> 412.
async function checkIfMatch(req) {
  const want = String(req.headers['if-match']).trim();
  const have = await upstreamEtag(req);
  if (have !== null && want !== '*' && want.replace(/"/g, '') !== have.replace(/"/g, '')) {
    throw new S3Err(412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-Match' });
  }
}

// ------------------------------------------------------------------ forwarding to s3rver
const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });
let upstreamPort;

// Sends the request on to s3rver and its answer back: delayMs later, with the headers
// mapHeaders makes of them, and cut off (connection closed) after cutAfter body bytes if set.
function forward(req, res, body, { delayMs = 0, mapHeaders = h => h, cutAfter = 0, path = req.url, anonymous = false } = {}) {
  return new Promise(resolve => {
    const headers = { ...req.headers };
    delete headers.expect; // answered here already
    if (anonymous) delete headers.authorization; // verified here already (a presigned URL)
    if (body && (body.length || headers['content-length'] || headers['transfer-encoding'])) {
      delete headers['transfer-encoding'];
      headers['content-length'] = String(body.length);
    }
    const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path, headers, agent: upstreamAgent },
      async ures => {
        if (delayMs) await sleep(delayMs);
        const h = { ...ures.headers };
        delete h.connection; delete h['keep-alive']; delete h['transfer-encoding'];
        res.writeHead(ures.statusCode, mapHeaders(h));
        if (cutAfter) {
          let sent = 0;
          ures.on('data', chunk => {
            if (sent < 0) return;
            if (sent + chunk.length < cutAfter) { sent += chunk.length; res.write(chunk); return; }
            res.write(chunk.subarray(0, cutAfter - sent), () => { res.destroy(); });
            sent = -1;
            ures.destroy();
            resolve(ures.statusCode);
          });
          ures.on('end', () => { if (sent >= 0) res.end(); });
        } else {
          ures.pipe(res);
        }
        ures.on('end', () => resolve(ures.statusCode));
        ures.on('error', () => { res.destroy(); resolve(502); });
      });
    up.on('error', err => {
      if (!res.headersSent) sendError(req, res, new S3Err(500, 'InternalError', 'upstream: ' + err.message)); else res.destroy();
      resolve(500);
    });
    res.on('close', () => { if (!res.writableFinished) up.destroy(); });
    if (body) up.end(body);
    else {
      req.pipe(up);
      req.on('close', () => { if (!req.complete) up.destroy(); });
    }
  });
}

// ------------------------------------------------------------------ request handler
async function handle(req, res, expectContinue) {
  const qi = req.url.indexOf('?');
  const rawPath = qi < 0 ? req.url : req.url.slice(0, qi);
  const query = {}; // decoded, repeated names as arrays (as the signer expects)
  for (const kv of (qi < 0 ? '' : req.url.slice(qi + 1)).split('&').filter(Boolean)) {
    const j = kv.indexOf('=');
    const k = decode(j < 0 ? kv : kv.slice(0, j)), v = j < 0 ? '' : decode(kv.slice(j + 1));
    query[k] = k in query ? [].concat(query[k], v) : v;
  }
  const segs = rawPath.split('/').slice(1);
  const bucket = decode(segs[0] || ''), key = segs.slice(1).map(decode).join('/');
  let status = 0, note = '';
  stats.requests++;
  if (!req.socket.carriedS3) {
    req.socket.carriedS3 = true;
    stats.connections++;
  }
  try {
    if ('X-Amz-Algorithm' in query || 'X-Amz-Signature' in query) {
      // A presigned GET or HEAD: forwarded anonymously, with the overrides it signed applied here.
      const rest = await verifyPresigned(req, rawPath, query);
      const overrides = {};
      for (const [k, v] of Object.entries(rest)) {
        if (k === 'response-content-type') overrides['content-type'] = String(v);
        else if (k === 'response-content-disposition') overrides['content-disposition'] = String(v);
        else throw new S3Err(400, 'InvalidArgument', `This test server takes no ${k} in a presigned URL`);
      }
      note = ' presigned';
      status = await forward(req, res, null, { path: rawPath, anonymous: true,
        mapHeaders: h => (h.etag ? { ...h, ...overrides } : h) });
      process.stderr.write(`${new Date().toISOString()} ${req.method} ${req.url} ${status}${note}\n`);
      return;
    }
    await verifySignature(req, rawPath, query);
    if (expectContinue) res.writeContinue();

    const payload = req.headers['x-amz-content-sha256'];
    const isComplete = req.method === 'POST' && key && 'uploadId' in query;
    const isUploadPart = req.method === 'PUT' && key && 'uploadId' in query && 'partNumber' in query;
    let body = null;
    if (payload !== 'UNSIGNED-PAYLOAD' || isComplete) {
      body = await readBody(req);
      if (payload !== 'UNSIGNED-PAYLOAD' && crypto.createHash('sha256').update(body).digest('hex') !== payload) {
        throw new S3Err(400, 'XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed.",
          { ClientComputedContentSHA256: payload, S3ComputedContentSHA256: crypto.createHash('sha256').update(body).digest('hex') });
      }
    }

    if (req.method === 'GET' && !key && 'uploads' in query) { await listMultipartUploads(req, res, bucket, query); status = 200; }
    else if (req.method === 'GET' && key && 'uploadId' in query) { await listParts(req, res, bucket, key, query); status = 200; }
    else if (req.method === 'DELETE' && key && 'uploadId' in query) { await abortMultipartUpload(req, res, bucket, key, query); status = 204; }
    else if (isUploadPart && 'x-amz-copy-source' in req.headers) { checkPartNumber(query); await uploadPartCopy(req, res, bucket, key, query); status = 200; }
    else {
      if (isUploadPart) {
        checkPartNumber(query);
        await requireBucket(bucket);
        await requireUpload(bucket, key, query.uploadId);
        if (opt.failParts > 0) {
          opt.failParts--;
          throw new S3Err(503, 'SlowDown', 'Please reduce your request rate.');
        }
      }
      if (isComplete && opt.longEtags) body = realEtags(body);
      if (isComplete) { await requireBucket(bucket); await checkComplete(bucket, key, query, body); }
      const isGetObject = req.method === 'GET' && key && !hasQuery(query);
      if (isGetObject && req.headers['if-match'] !== undefined) await checkIfMatch(req);
      let cutAfter = 0;
      if (isGetObject && opt.cutGets > 0) { opt.cutGets--; cutAfter = CUT_AFTER; note = ' cut'; }
      const mapHeaders = h => (isUploadPart && opt.longEtags && h.etag ? { ...h, etag: longEtag(h.etag) } : h);
      status = await forward(req, res, body, { delayMs: isUploadPart ? opt.slowMs : 0, mapHeaders, cutAfter });
    }
  } catch (e) {
    if (!(e instanceof S3Err)) e = new S3Err(500, 'InternalError', String(e && e.stack || e));
    status = e.status; note = ' ' + e.code;
    if (res.headersSent) res.destroy(); else sendError(req, res, e);
  }
  process.stderr.write(`${new Date().toISOString()} ${req.method} ${req.url} ${status}${note}\n`);
}

// ------------------------------------------------------------------ stats (GET /_launcher/stats)
const stats = { accepted: 0, connections: 0, requests: 0 };

function route(req, res, expectContinue) {
  if (req.method === 'GET' && req.url === '/_launcher/stats') {
    const body = JSON.stringify(stats);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  handle(req, res, expectContinue);
}

// ------------------------------------------------------------------ start / stop
async function main() {
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(opt.accessKey, opt.secret); // s3rver checks the key id only
  const s3rver = new S3rver({ address: '127.0.0.1', port: 0, directory: path.resolve(opt.dir), silent: true,
    vhostBuckets: false, configureBuckets: [{ name: opt.bucket }] });
  upstreamPort = (await s3rver.run()).port;

  const server = http.createServer((req, res) => route(req, res, false));
  server.on('checkContinue', (req, res) => route(req, res, true));
  server.on('connection', () => { stats.accepted++; });
  server.on('clientError', (err, sock) => sock.destroy());
  server.keepAliveTimeout = 30000;
  await new Promise((resolve, reject) => server.once('error', reject).listen(Number(opt.port), '127.0.0.1', resolve));
  process.stdout.write('ready\n');

  const stop = () => {
    server.close();
    server.closeAllConnections();
    upstreamAgent.destroy();
    s3rver.close().catch(() => {}).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch(err => { console.error('launcher.js:', err && err.stack || err); process.exit(1); });
