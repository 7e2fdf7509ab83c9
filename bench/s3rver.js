#!/usr/bin/env node
// Plain s3rver for bench/bench.sh: no signature-verifying front (tests/s3/launcher.js reads
// whole bodies to check them, which would distort timing). Uses tests/s3/node_modules
// (`npm ci` in tests/s3).
//
// usage: node bench/s3rver.js --dir D --bucket B --access-key K --secret S [--port P]
// Listens on 127.0.0.1:P (P = 0 or absent: a free port), keeps its data under D (use real
// disk), creates bucket B, accepts access key K (s3rver checks the key id of SigV4 requests,
// not the signature). Prints "ready <port>" on stdout once listening; exits 0 on SIGTERM.
'use strict';

const path = require('path');

const MODULES = path.join(__dirname, '..', 'tests', 's3', 'node_modules');
const S3rver = require(path.join(MODULES, 's3rver'));
const AWSAccount = require(path.join(MODULES, 's3rver', 'lib', 'models', 'account'));

const opt = { port: '0' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
  if (!['port', 'dir', 'bucket', 'accessKey', 'secret'].includes(name) || argv[i + 1] === undefined) {
    console.error('usage: s3rver.js --dir D --bucket B --access-key K --secret S [--port P]');
    process.exit(2);
  }
  opt[name] = argv[i + 1];
}
for (const k of ['dir', 'bucket', 'accessKey', 'secret']) {
  if (!opt[k]) {
    console.error('s3rver.js: --' + k.replace(/[A-Z]/g, c => '-' + c.toLowerCase()) + ' is required');
    process.exit(2);
  }
}

async function main() {
  // as tests/s3/launcher.js does: register the key with s3rver's one dummy account
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(opt.accessKey, opt.secret);
  const s3rver = new S3rver({
    address: '127.0.0.1', port: Number(opt.port), directory: path.resolve(opt.dir), silent: true,
    vhostBuckets: false, configureBuckets: [{ name: opt.bucket }],
  });
  const { port } = await s3rver.run();
  process.stdout.write('ready ' + port + '\n');

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    s3rver.close().catch(() => {}).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch(err => { console.error('s3rver.js:', err && err.stack || err); process.exit(1); });
