"""CORS end to end: a page on another origin calls the server with fetch() in headless
Chromium (tests/browser/cors_fetch.js), so that the browser runs the preflights and decides
what the page may read; a page on an origin not listed gets nothing."""

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, REPO, ServerTestCase, free_port  # noqa: E402

SCRIPT = os.path.join(REPO, "tests", "browser", "cors_fetch.js")
PLAYWRIGHT = os.path.join(REPO, "tests", "js", "node_modules", "playwright-core")


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>another origin</title><p>page</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class CorsBrowserTest(ServerTestCase):

    def test_page_on_another_origin(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is needed (Node.js 20)")
        self.assertTrue(os.path.isdir(PLAYWRIGHT),
                        "playwright-core missing: run make test-servers (npm ci in tests/js)")
        self.assertTrue(os.access("/usr/bin/chromium", os.X_OK), "Debian's chromium is needed")
        page_port = free_port()
        pages = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), _Page)
        threading.Thread(target=pages.serve_forever, daemon=True).start()
        self.addCleanup(pages.server_close)
        self.addCleanup(pages.shutdown)
        allowed = "http://127.0.0.1:%d" % page_port
        srv = self.start_server(env={"CORS_ALLOWED_ORIGINS": allowed,
                                     "RATE_LIMIT_PER_MINUTE": "60", "RATE_LIMIT_BURST": "12"})
        server = "http://127.0.0.1:%d" % srv.port
        p = subprocess.run([node, SCRIPT, server, allowed + "/", "http://localhost:%d/" % page_port,
                            API_KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace")[-3000:])
        result = json.loads(p.stdout.decode())
        ok = result["allowed"]
        self.assertNotIn("error", ok, ok)
        self.assertEqual((ok["init"], ok["part"], ok["status"], ok["uploaded"]), (200, 200, 200, 1), ok)
        self.assertTrue(ok["requestId"], "X-Request-Id is not exposed to the page")
        self.assertEqual(ok["notFound"], {"status": 404, "body": {"error": "Not found: /nope", "status": 404}})
        self.assertEqual(ok["limited"]["status"], 429, ok)
        self.assertEqual(ok["limited"]["retryAfter"], "1", "Retry-After is not exposed to the page")
        self.assertEqual(ok["limited"]["body"]["status"], 429)
        # From an origin not listed the browser refuses at the preflight: the page reads nothing
        # and the server never sees the request itself.
        refused = result["refused"]
        self.assertIn("TypeError", refused.get("error", ""), refused)
        self.assertNotIn("init", refused)
        log = srv.log_text()
        self.assertRegex(log, r"OPTIONS /upload/init 204")
        self.assertRegex(log, r"OPTIONS /upload/[0-9a-f-]+/part/0 204")
        self.assertRegex(log, r"OPTIONS /upload/init 403 \"Origin http://localhost:%d is not allowed"
                         % page_port)
        self.assertEqual(log.count("POST /upload/init"), 1)
