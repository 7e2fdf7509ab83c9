"""The API's description of itself: /api/openapi.json and the docs page at /api/docs.

The document the server serves validates with @apidevtools/swagger-parser (tests/js), and it
names exactly the routes the server answers: the server compares it with its router at start
(every route described, every operation routed, the same credentials) and logs each
difference, which must be none, also with another TUS_BASE_PATH; and every operation it
describes is one the server says it takes (the Allow of an OPTIONS request on its path).
The page renders in headless Chromium with every request beyond the server blocked.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BINARY, REPO, ServerTestCase, browser_run, http_request  # noqa: E402

VALIDATOR = os.path.join(REPO, "tests", "js", "openapi_validate.js")
SWAGGER_UI = os.path.join(os.path.dirname(BINARY), "web", "node_modules", "swagger-ui-dist")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PROBLEM = "API description:"


def validate(doc):
    node = shutil.which("node")
    if not node:
        raise AssertionError("node is needed (Node.js 20)")
    p = subprocess.run([node, VALIDATOR], input=json.dumps(doc).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise AssertionError("openapi_validate.js failed: %s" % p.stderr.decode("utf-8", "replace"))
    return json.loads(p.stdout.decode())


def operations(doc):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def concrete(path, operation):
    """The path template with its parameters filled in."""
    def value(m):
        name = m.group(1)
        for p in operation.get("parameters", []):
            if p.get("in") == "path" and p.get("name") == name and "enum" in p.get("schema", {}):
                return p["schema"]["enum"][0]
        return "0" if name == "n" else str(uuid.uuid4())
    return re.sub(r"\{([^}]+)\}", value, path)


class OpenApiDocumentTest(ServerTestCase):

    def fetch_document(self, srv):
        r = http_request(srv.port, "GET", "/api/openapi.json")
        self.assertEqual(r.status, 200, r)
        self.assertJsonContentType(r)
        return r.json

    def assertNoProblems(self, srv):
        problems = [line for line in srv.log_text().splitlines() if PROBLEM in line]
        self.assertEqual(problems, [], "the document and the routes differ")

    def assertRoutedAsDescribed(self, srv, doc):
        """Every operation is one the server takes on its path (OPTIONS says which)."""
        checked = 0
        for method, path, op in operations(doc):
            r = http_request(srv.port, "OPTIONS", concrete(path, op))
            self.assertEqual(r.status, 204, "%s %s: the server does not know the path: %r" % (method, path, r))
            allow = [m.strip() for m in r.headers.get("allow", "").split(",")]
            self.assertIn(method, allow, "%s %s is described but not answered (Allow: %s)"
                          % (method, path, r.headers.get("allow")))
            checked += 1
        return checked

    def test_document_validates_and_names_every_route(self):
        srv = self.start_server()
        doc = self.fetch_document(srv)
        result = validate(doc)
        self.assertTrue(result["valid"], result.get("error"))
        self.assertEqual(result["version"], "3.1.0")
        # Not a vacuous validator: a dangling reference and a malformed parameter are refused.
        broken = json.loads(json.dumps(doc))
        del broken["components"]["schemas"]["FileEntry"]
        self.assertFalse(validate(broken)["valid"])
        broken = json.loads(json.dumps(doc))
        broken["paths"]["/health"]["get"]["parameters"] = [{"name": "x", "in": "path"}]
        self.assertFalse(validate(broken)["valid"])

        health = http_request(srv.port, "GET", "/health").json
        self.assertEqual(doc["info"]["version"], health["version"])
        self.assertNoProblems(srv)
        self.assertNotIn("x-unrouted-paths", doc)
        self.assertEqual(self.assertRoutedAsDescribed(srv, doc), result["operations"])
        ops = {(m, p) for m, p, _ in operations(doc)}
        for want in [("POST", "/upload/init"), ("PUT", "/upload/{id}/part/{n}"),
                     ("GET", "/upload/{id}/status"), ("POST", "/upload/{id}/complete"),
                     ("DELETE", "/upload/{id}"), ("OPTIONS", "/files/"), ("POST", "/files/"),
                     ("POST", "/files"), ("HEAD", "/files/{id}"), ("PATCH", "/files/{id}"),
                     ("DELETE", "/files/{id}"), ("GET", "/api/files/upload/chunked"),
                     ("POST", "/api/files/upload/chunked"), ("GET", "/api/files"),
                     ("GET", "/api/files/{id}"), ("HEAD", "/api/files/{id}"),
                     ("DELETE", "/api/files/{id}"), ("POST", "/api/files/{id}/link"),
                     ("GET", "/api/files/{id}/download"), ("POST", "/api/files/upload"),
                     ("GET", "/health"), ("GET", "/health/ready"), ("GET", "/api/openapi.json"),
                     ("GET", "/api/docs")]:
            self.assertIn(want, ops)

        # Every error reply is described by the one Error schema ({"error", "status"}).
        error = doc["components"]["schemas"]["Error"]
        self.assertEqual(sorted(error["required"]), ["error", "status"])
        responses = doc["components"]["responses"]
        for method, path, op in operations(doc):
            for status, reply in op["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in reply:
                    reply = responses[reply["$ref"].rsplit("/", 1)[1]]
                schema = reply["content"]["application/json"]["schema"]
                self.assertEqual(schema, {"$ref": "#/components/schemas/Error"}, (method, path, status))
        # Credentials: the API key (as X-API-Key or a bearer token) and the part tokens.
        schemes = doc["components"]["securitySchemes"]
        self.assertEqual((schemes["ApiKey"]["type"], schemes["ApiKey"]["in"], schemes["ApiKey"]["name"]),
                         ("apiKey", "header", "X-API-Key"))
        self.assertEqual((schemes["Bearer"]["type"], schemes["Bearer"]["scheme"]), ("http", "bearer"))
        self.assertEqual(doc["paths"]["/upload/{id}/part/{n}"]["put"]["security"], [{"PartToken": []}])
        self.assertEqual(doc["paths"]["/api/files/{id}/download"]["get"]["security"], [])

    def test_tus_base_path_followed(self):
        srv = self.start_server(env={"TUS_BASE_PATH": "/uploads/tus/"})
        doc = self.fetch_document(srv)
        self.assertNoProblems(srv)
        self.assertIn("/uploads/tus/{id}", doc["paths"])
        self.assertIn("/uploads/tus/", doc["paths"])
        self.assertIn("/uploads/tus", doc["paths"])
        self.assertFalse([p for p in doc["paths"] if p.startswith("/files")])
        self.assertRoutedAsDescribed(srv, doc)
        self.assertTrue(validate(doc)["valid"])

    def test_served_with_tags_and_compression(self):
        srv = self.start_server()
        plain = http_request(srv.port, "GET", "/api/openapi.json")
        self.assertEqual(plain.status, 200)
        self.assertNotIn("content-encoding", plain.headers)
        self.assertEqual(plain.headers["cache-control"], "no-cache")
        self.assertEqual(plain.headers["vary"], "Accept-Encoding")
        self.assertEqual(int(plain.headers["content-length"]), len(plain.body))
        packed = http_request(srv.port, "GET", "/api/openapi.json", headers={"Accept-Encoding": "br, gzip"})
        self.assertEqual(packed.headers["content-encoding"], "gzip")
        self.assertEqual(gzip.decompress(packed.body), plain.body)
        self.assertLess(len(packed.body), len(plain.body) / 3)
        self.assertNotEqual(packed.headers["etag"], plain.headers["etag"])
        refused = http_request(srv.port, "GET", "/api/openapi.json", headers={"Accept-Encoding": "gzip;q=0, *"})
        self.assertNotIn("content-encoding", refused.headers)
        # Revalidation: 304 for the tag of the representation asked for, and only that.
        for enc, tag in (("identity", plain.headers["etag"]), ("gzip", packed.headers["etag"])):
            r = http_request(srv.port, "GET", "/api/openapi.json",
                             headers={"Accept-Encoding": enc, "If-None-Match": tag})
            self.assertEqual((r.status, r.body, r.headers["etag"]), (304, b"", tag))
        r = http_request(srv.port, "GET", "/api/openapi.json",
                         headers={"If-None-Match": packed.headers["etag"]})
        self.assertEqual(r.status, 200)
        head = http_request(srv.port, "HEAD", "/api/openapi.json")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(head.headers["content-length"], plain.headers["content-length"])
        self.assertEqual(head.headers["etag"], plain.headers["etag"])
        # No credentials needed, even wrong ones are not looked at.
        r = http_request(srv.port, "GET", "/api/openapi.json", headers={"X-API-Key": "wrong"})
        self.assertEqual(r.body, plain.body)

    def test_docs_page_and_assets(self):
        srv = self.start_server()
        page = http_request(srv.port, "GET", "/api/docs")
        self.assertEqual(page.status, 200)
        self.assertEqual(page.headers["content-type"], "text/html; charset=utf-8")
        csp = page.headers["content-security-policy"]
        sources = re.findall(r"(?:^|;\s*)[a-z-]+ ([^;]+)", csp)
        for allowed in sources:
            for source in allowed.split():
                self.assertIn(source, ("'self'", "'none'", "data:"), csp)
        self.assertIn("default-src 'none'", csp)
        self.assertIn("script-src 'self'", csp)
        self.assertEqual(page.headers["x-content-type-options"], "nosniff")
        self.assertIn(b'src="docs/swagger-ui-bundle.js"', page.body)
        self.assertNotRegex(page.body.decode(), r"(src|href)=\"(https?:)?//")
        # Swagger UI's files, byte for byte as the npm package has them, with or without gzip.
        for name, source, ctype in (
                ("swagger-ui-bundle.js", "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
                ("swagger-ui.css", "swagger-ui.css", "text/css; charset=utf-8"),
                ("favicon.png", "favicon-32x32.png", "image/png"),
                ("docs.js", os.path.join(REPO, "web", "docs", "docs.js"), "text/javascript; charset=utf-8")):
            with open(os.path.join(SWAGGER_UI, source), "rb") as f:
                want = f.read()
            plain = http_request(srv.port, "GET", "/api/docs/" + name)
            self.assertEqual((plain.status, plain.headers["content-type"]), (200, ctype), name)
            self.assertEqual(plain.body, want, name)
            self.assertEqual(plain.headers["content-security-policy"], csp)
            packed = http_request(srv.port, "GET", "/api/docs/" + name, headers={"Accept-Encoding": "gzip"})
            self.assertEqual(packed.headers["content-encoding"], "gzip")
            self.assertEqual(gzip.decompress(packed.body), want, name)
            r = http_request(srv.port, "GET", "/api/docs/" + name,
                             headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]})
            self.assertEqual(r.status, 304, name)
            head = http_request(srv.port, "HEAD", "/api/docs/" + name)
            self.assertEqual((head.status, head.body, int(head.headers["content-length"])),
                             (200, b"", len(want)))
        self.assertError(http_request(srv.port, "GET", "/api/docs/index.html"), 404)
        self.assertError(http_request(srv.port, "GET", "/api/docs/swagger-ui-bundle.js.map"), 404)
        r = http_request(srv.port, "GET", "/api/docs/")
        self.assertEqual((r.status, r.headers["location"]), (308, "../docs"))

    def test_docs_page_renders_offline(self):
        srv = self.start_server()
        doc = self.fetch_document(srv)
        server = "http://127.0.0.1:%d" % srv.port
        out = browser_run("docs.js", {"server": server}, timeout=120)
        self.assertEqual(out["errors"], [])
        # Nothing tried to leave: no CSP violation but the test's own probe (refused by the
        # page's policy before the network), and no request blocked by the wall.
        self.assertEqual(out["outside"], "refused")
        self.assertEqual([v for v in out["violations"] if "cu-probe" not in v], [])
        self.assertEqual(out["blocked"], [])
        for r in out["requests"]:
            self.assertTrue(r["url"].startswith(server + "/api/"), r)
            self.assertEqual(r.get("status"), 200, r)
        fetched = {r["url"][len(server):] for r in out["requests"]}
        self.assertTrue({"/api/docs", "/api/openapi.json", "/api/docs/swagger-ui-bundle.js",
                         "/api/docs/swagger-ui.css", "/api/docs/docs.js"} <= fetched, fetched)
        # The page shows the document: its title and version, its tags, every operation with
        # its summary, and an operation's responses once opened.
        self.assertEqual(out["title"], "chunked-uploader API")
        self.assertIn("chunked-uploader", out["heading"])
        self.assertIn(doc["info"]["version"], out["heading"])
        self.assertEqual(out["tags"], [t["name"] for t in doc["tags"]])
        shown = sorted((o["method"], o["path"], o["summary"]) for o in out["operations"])
        described = sorted((m, p, op["summary"]) for m, p, op in operations(doc))
        self.assertEqual(shown, described)
        self.assertIn("sans-serif", out["styled"])
        self.assertEqual(out["listFilesResponses"][1:],
                         sorted(doc["paths"]["/api/files"]["get"]["responses"], key=int))
        sys.stderr.write("docs page rendered in %.1f s\n" % out["renderSeconds"])


if __name__ == "__main__":
    import unittest
    unittest.main()
