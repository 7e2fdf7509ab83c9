#!/usr/bin/env node
// openapi_validate.js - validates an OpenAPI document with @apidevtools/swagger-parser (the
// npm package, unchanged): the schema of OpenAPI 3.1, then every $ref resolved.
//
//   node openapi_validate.js < document.json
//
// Prints one JSON line: {valid: true, version, paths, operations} or {valid: false, error}.
'use strict';

const fs = require('fs');
const path = require('path');
const SwaggerParser = require(path.join(__dirname, 'node_modules', '@apidevtools', 'swagger-parser'));

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

(async () => {
  const doc = JSON.parse(fs.readFileSync(0, 'utf8'));
  try {
    const api = await SwaggerParser.validate(doc);
    let operations = 0;
    for (const item of Object.values(api.paths)) operations += METHODS.filter((m) => item[m]).length;
    process.stdout.write(JSON.stringify({valid: true, version: api.openapi,
                                         paths: Object.keys(api.paths).length, operations}) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({valid: false, error: String(e.message || e)}) + '\n');
  }
})();
