// tus_node_server.mjs - @tus/server with @tus/file-store (tests/js/node_modules), the tus
// reference bench/tus_bench.py measures ours against.
//
//   node bench/tus_node_server.mjs PORT DIRECTORY
//
// Serves tus at http://127.0.0.1:PORT/files/, storing uploads in DIRECTORY; prints "ready"
// once it listens.
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, '..', 'tests', 'js', 'node_modules');
const load = (name) => import(pathToFileURL(path.join(modules, name, 'dist', 'index.js')).href);
const { Server } = await load('@tus/server');
const { FileStore } = await load('@tus/file-store');

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const server = http.createServer((req, res) => tus.handle(req, res));
server.listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
