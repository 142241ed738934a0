"""Routes to https:// upstreams: the upstream's certificate is verified (against a CA made here,
for the URL's host or a configured name), connections are pooled with their TLS sessions, and
bodies stream. An upstream that cannot prove its name gets no request: the client gets 502."""
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from ghtest import Gatehouse

BINARY = sys.argv[1]


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so that gatehouse can pool
    peers = set()

    def do_GET(self):
        Upstream.peers.add(self.client_address[1])
        if self.path.endswith("/events"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                event = f"data: token{i}\n\n".encode()
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
            return
        peer = self.connection.getpeercert() if hasattr(self.connection, "getpeercert") else None
        body = json.dumps({
            "client_cn": dict(x[0] for x in peer["subject"])["commonName"] if peer else None,
            "path": self.path,
            "host": self.headers.get("Host"),
            "org": self.headers.get("X-Gatehouse-Org"),
            "authorization": self.headers.get("Authorization"),
            "sni": getattr(self.connection, "gatehouse_sni", None),
            "resumed": getattr(self.connection, "session_reused", None),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.path.endswith("/close"):  # this connection ends here: the next one is new
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class UpstreamTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="gatehouse-upstream-tls-")
        d = cls.dir
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
        openssl("req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem",
                "-subj", "/CN=upstream-test-ca")
        openssl("req", "-x509", *ec, "-keyout", f"{d}/other.key", "-out", f"{d}/other-ca.pem",
                "-subj", "/CN=other-ca")
        openssl("req", "-x509", *ec, "-keyout", f"{d}/server.key", "-out", f"{d}/server.pem",
                "-subj", "/CN=models.internal", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
                "-addext", "subjectAltName=DNS:models.internal,IP:127.0.0.1")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{d}/server.pem", f"{d}/server.key")

        def remember_sni(sock, name, _ctx):
            sock.gatehouse_sni = name

        ctx.sni_callback = remember_sni
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        cls.server.socket = ctx.wrap_socket(cls.server.socket, server_side=True)
        cls.port = cls.server.server_address[1]
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        # A second upstream that serves only clients with a certificate from the CA (mTLS).
        openssl("req", "-x509", *ec, "-keyout", f"{d}/client.key", "-out", f"{d}/client.pem",
                "-subj", "/CN=gatehouse", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
                "-addext", "extendedKeyUsage=clientAuth")
        mutual = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        mutual.load_cert_chain(f"{d}/server.pem", f"{d}/server.key")
        mutual.load_verify_locations(f"{d}/ca.pem")
        mutual.verify_mode = ssl.CERT_REQUIRED
        cls.mutual = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        cls.mutual.socket = mutual.wrap_socket(cls.mutual.socket, server_side=True)
        threading.Thread(target=cls.mutual.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.mutual.shutdown()

    def gatehouse(self, name, settings, port=None, top=""):
        route = (f'{top}[[routes]]\nname = "{name}"\npath_prefix = "/models"\n'
                 f'upstream = "https://127.0.0.1:{port or self.port}/v1"\nstrip_prefix = true\n'
                 f'scopes = ["read:findings"]\n{settings}')
        return Gatehouse(BINARY, extra_config=route).start()

    def test_an_upstream_that_requires_a_client_certificate_gets_gatehouses(self):
        port = self.mutual.server_address[1]
        trusted = f'upstream_tls_ca_file = "{self.dir}/ca.pem"\n'
        gh = self.gatehouse("models", trusted + f'upstream_tls_cert_file = "{self.dir}/client.pem"\n'
                            f'upstream_tls_key_file = "{self.dir}/client.key"\n', port)
        try:
            r = requests.get(f"{gh.url}/models/x", headers={"Authorization": f"Bearer {gh.key}"})
            self.assertEqual(r.status_code, 200, r.text)
            self.assertEqual(r.json()["client_cn"], "gatehouse")
            self.assertEqual(r.json()["org"], gh.org)
        finally:
            gh.stop()
        # Without the certificate the upstream ends the session: nothing is served.
        gh = self.gatehouse("models", trusted, port)
        try:
            r = requests.get(f"{gh.url}/models/x", headers={"Authorization": f"Bearer {gh.key}"})
            self.assertEqual(r.status_code, 502, r.text)
        finally:
            gh.stop()

    def test_a_verified_upstream_gets_the_request_over_one_pooled_connection(self):
        gh = self.gatehouse("models", f'upstream_tls_ca_file = "{self.dir}/ca.pem"\n')
        try:
            auth = {"Authorization": f"Bearer {gh.key}"}
            Upstream.peers.clear()
            with requests.Session() as s:
                for i in range(3):
                    r = s.get(f"{gh.url}/models/chat/{i}", headers=auth)
                    self.assertEqual(r.status_code, 200, r.text)
                    seen = r.json()
                    self.assertEqual(seen["path"], f"/v1/chat/{i}")
                    self.assertEqual(seen["host"], f"127.0.0.1:{self.port}")
                    self.assertEqual(seen["org"], gh.org)
                    self.assertIsNone(seen["authorization"])  # the key stays at gatehouse
                    self.assertIsNone(seen["sni"])  # an address is never sent as SNI
            self.assertEqual(len(Upstream.peers), 1, "three requests, one upstream connection")
            # Server-sent events arrive as the upstream writes them, through TLS.
            arrivals = []
            with requests.get(f"{gh.url}/models/events", headers=auth, stream=True) as r:
                self.assertEqual(r.status_code, 200)
                for line in r.iter_lines():
                    if line:
                        arrivals.append((time.monotonic(), line))
            self.assertEqual([a[1] for a in arrivals], [b"data: token0", b"data: token1",
                                                        b"data: token2"])
            self.assertGreater(arrivals[2][0] - arrivals[0][0], 0.3)
        finally:
            gh.stop()

    def test_a_new_connection_resumes_the_last_tls_session(self):
        # One network thread: sessions are kept per thread, with its connection pool.
        gh = self.gatehouse("models", f'upstream_tls_ca_file = "{self.dir}/ca.pem"\n',
                            top="threads = 1\n")
        try:
            auth = {"Authorization": f"Bearer {gh.key}"}
            first = requests.get(f"{gh.url}/models/a/close", headers=auth)
            self.assertEqual(first.status_code, 200, first.text)
            self.assertFalse(first.json()["resumed"])
            # The upstream closed that connection; the next one resumes its session, once
            # verified: the resumed session carries the verified certificate.
            second = requests.get(f"{gh.url}/models/b/close", headers=auth)
            self.assertEqual(second.status_code, 200, second.text)
            self.assertTrue(second.json()["resumed"], gh.output()[-2000:])
        finally:
            gh.stop()

    def test_the_certificate_is_checked_for_the_configured_name(self):
        gh = self.gatehouse("models", f'upstream_tls_ca_file = "{self.dir}/ca.pem"\n'
                                      'upstream_tls_server_name = "models.internal"\n')
        try:
            r = requests.get(f"{gh.url}/models/x", headers={"Authorization": f"Bearer {gh.key}"})
            self.assertEqual(r.status_code, 200, r.text)
            self.assertEqual(r.json()["sni"], "models.internal")
        finally:
            gh.stop()

    def test_an_upstream_that_cannot_prove_its_name_gets_nothing(self):
        cases = [
            (f'upstream_tls_ca_file = "{self.dir}/other-ca.pem"\n', "not trusted for"),
            (f'upstream_tls_ca_file = "{self.dir}/ca.pem"\n'
             'upstream_tls_server_name = "elsewhere.internal"\n', "elsewhere.internal"),
            ("", "not trusted for"),  # the system's CAs never signed this test's CA
        ]
        for settings, logged in cases:
            gh = self.gatehouse("models", settings)
            try:
                Upstream.peers.clear()
                r = requests.get(f"{gh.url}/models/x",
                                 headers={"Authorization": f"Bearer {gh.key}"})
                self.assertEqual(r.status_code, 502, settings)
                self.assertEqual(r.json()["error"]["code"], "upstream_unavailable")
                self.assertNotIn("certificate verify", r.text)  # the reason goes to the log
                self.assertIn(logged, gh.output())
                self.assertEqual(Upstream.peers, set(), "no request reached the upstream")
            finally:
                gh.stop()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
