"""The operator's side: init, orgs, keys, config check, revocation reaching a running server,
TLS with a certificate made here, and certificate reload on SIGHUP."""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import requests

from ghtest import Gatehouse, run

BINARY = sys.argv[1]
SOURCE = sys.argv[2]


def make_cert(directory, name, serial):
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-set_serial", str(serial),
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class CliTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gatehouse-cli-")
        self.data = os.path.join(self.dir, "data")

    def test_init_prints_once_and_never_overwrites(self):
        first = json.loads(run(BINARY, "init", "--data-dir", self.data, "--json").stdout)
        self.assertTrue(first["api_key"].startswith("sk_live_"))
        pepper = os.path.join(self.data, "secrets", "pepper")
        self.assertEqual(os.stat(pepper).st_mode & 0o777, 0o600)
        before = open(pepper).read()
        second = json.loads(run(BINARY, "init", "--data-dir", self.data, "--json").stdout)
        self.assertEqual(second, {"org_id": first["org_id"], "already_initialized": True})
        self.assertEqual(open(pepper).read(), before)
        # The database never holds the key itself.
        db = open(os.path.join(self.data, "gatehouse.db"), "rb").read()
        wal = os.path.join(self.data, "gatehouse.db-wal")
        if os.path.exists(wal):
            db += open(wal, "rb").read()
        self.assertNotIn(first["api_key"].encode(), db)

    def test_init_creates_the_owner_user_who_can_sign_in(self):
        # Generated and printed once when no password is given...
        first = run(BINARY, "init", "--data-dir", self.data, "--owner-email", "Boss@Example.com",
                    "--json").stdout.splitlines()
        owner = json.loads(first[-1])
        self.assertEqual(owner["email"], "boss@example.com")
        self.assertGreaterEqual(len(owner["password"]), 15)
        db = open(os.path.join(self.data, "gatehouse.db"), "rb").read()
        wal = os.path.join(self.data, "gatehouse.db-wal")
        if os.path.exists(wal):
            db += open(wal, "rb").read()
        self.assertNotIn(owner["password"].encode(), db)
        self.assertIn(b"$argon2id$v=19$m=65536,t=3,p=1$", db)
        # ...or taken from GATEHOUSE_OWNER_PASSWORD, and checked like any password.
        other = os.path.join(self.dir, "other")
        env = dict(os.environ, GATEHOUSE_OWNER_PASSWORD="Password1234567")
        weak = run(BINARY, "init", "--data-dir", other, "--owner-email", "a@example.com",
                   env=env, check=False)
        self.assertNotEqual(weak.returncode, 0)
        self.assertIn("common password", weak.stderr)
        gh = Gatehouse(BINARY, data_dir=self.data)
        gh.start()
        try:
            r = requests.post(f"http://127.0.0.1:{gh.port}/v1/auth/login",
                              json={"email": "boss@example.com", "password": owner["password"]})
            self.assertEqual(r.status_code, 200, r.text)
            me = requests.get(f"http://127.0.0.1:{gh.port}/v1/me",
                              headers={"Authorization": "Bearer " + r.json()["token"]}).json()
            self.assertEqual(me["orgs"][0]["role"], "owner")
        finally:
            gh.stop()
        users = run(BINARY, "users", "list", "--data-dir", self.data).stdout
        self.assertIn("boss@example.com", users)

    def test_orgs_and_keys_commands(self):
        run(BINARY, "init", "--data-dir", self.data)
        org = json.loads(run(BINARY, "orgs", "create", "Beta Corp", "--data-dir", self.data,
                             "--json").stdout)
        self.assertIn(org["org_id"], run(BINARY, "orgs", "list", "--data-dir", self.data).stdout)
        created = json.loads(run(BINARY, "keys", "create", "--org", org["org_id"], "--label", "ci",
                                 "--scope", "read:findings", "--expires-in", "30d", "--json",
                                 "--data-dir", self.data).stdout)
        self.assertEqual(created["scopes"], ["read:findings"])
        listing = run(BINARY, "keys", "list", "--org", org["org_id"], "--data-dir", self.data).stdout
        self.assertIn(created["id"], listing)
        self.assertNotIn(created["key"], listing)
        # Every org's keys at once, each line naming its org; never used, so all are unused.
        every = [json.loads(line) for line in run(
            BINARY, "keys", "list", "--all-orgs", "--unused-since", "2000-01-01T00:00:00Z",
            "--data-dir", self.data).stdout.splitlines()]
        self.assertEqual(len({k["org_id"] for k in every}), 2)
        self.assertIn(created["id"], [k["id"] for k in every])
        self.assertTrue(all(k["last_used_at"] is None for k in every))
        for args, says in ((["--org", org["org_id"], "--all-orgs"], "excludes"),
                           ([], "--all-orgs"),
                           (["--all-orgs", "--unused-since", "yesterday"], "--unused-since")):
            refused = run(BINARY, "keys", "list", *args, "--data-dir", self.data, check=False)
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn(says, refused.stderr)
        rotated = json.loads(run(BINARY, "keys", "rotate", "--org", org["org_id"], created["id"],
                                 "--grace", "1h", "--json", "--data-dir", self.data).stdout)
        self.assertNotEqual(rotated["key"], created["key"])
        out = run(BINARY, "keys", "revoke", "--org", org["org_id"], rotated["id"],
                  "--data-dir", self.data).stdout
        self.assertIn("revoked", out)
        bad = run(BINARY, "keys", "create", "--org", org["org_id"], "--label", "x", "--scope",
                  "no:such", "--data-dir", self.data, check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("unknown scope", bad.stderr)

    def test_audit_export_prints_a_chain_as_json_lines(self):
        gh = Gatehouse(BINARY).start()
        try:
            admin = {"Authorization": f"Bearer {gh.key}"}
            for label in ("one", "two"):
                self.assertEqual(requests.post(f"{gh.url}/v1/orgs/{gh.org}/keys", headers=admin,
                                               json={"label": label, "scopes": []}).status_code, 201)
            # A credential that names no org is recorded in the operator's "system" chain,
            # which no org's key can read through the API.
            self.assertEqual(requests.get(f"{gh.url}/api/v1/findings",
                                          headers={"X-API-Key": "not-a-key"}).status_code, 401)

            def export(*args):
                out = run(BINARY, "audit", "export", *args, "--data-dir", gh.data_dir).stdout
                return [json.loads(line) for line in out.splitlines()]

            events = export("--org", gh.org)
            self.assertEqual([e["seq"] for e in events], list(range(1, len(events) + 1)))
            self.assertEqual([e["action"] for e in events].count("key.create"), 2)
            self.assertTrue(all(e["org_id"] == gh.org and len(e["hash"]) == 64 for e in events))
            self.assertEqual(len(export("--org", gh.org, "--after-seq", "1")), len(events) - 1)
            system = export("--org", "system")
            self.assertTrue([e for e in system if e["status"] == 401], system)
            self.assertNotIn("not-a-key", json.dumps(system))  # the credential is never kept
            missing = run(BINARY, "audit", "export", "--data-dir", gh.data_dir, check=False)
            self.assertNotEqual(missing.returncode, 0)
        finally:
            gh.stop()

    def test_config_check(self):
        good = run(BINARY, "config", "check", "--config", os.path.join(SOURCE, "gatehouse.example.toml"))
        self.assertIn("OK", good.stdout)
        bad_path = os.path.join(self.dir, "bad.toml")
        with open(bad_path, "w") as f:
            f.write('threads = 1\n\n[[routes]]\npath_prefix = "/api"\nupstream = "gopher://x"\n')
        bad = run(BINARY, "config", "check", "--config", bad_path, check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn(bad_path + ":3: routes[0].upstream", bad.stderr)
        # TLS material is loaded as the server would: a key that is not PEM is found now,
        # by check and by serve alike, not at the first request to that upstream.
        cert, _ = make_cert(self.dir, "client", 4444)
        garbage = os.path.join(self.dir, "client-key.pem")
        with open(garbage, "w") as f:
            f.write("not a key\n")
        tls_path = os.path.join(self.dir, "tls.toml")
        with open(tls_path, "w") as f:
            f.write(f'[[routes]]\nname = "models"\npath_prefix = "/models"\n'
                    f'upstream = "https://127.0.0.1:9"\nupstream_tls_cert_file = "{cert}"\n'
                    f'upstream_tls_key_file = "{garbage}"\n')
        for command in (["config", "check"], ["serve"]):
            bad = run(BINARY, *command, "--config", tls_path, check=False)
            self.assertNotEqual(bad.returncode, 0, command)
            self.assertIn("routes[0] (models): cannot use the client key " + garbage, bad.stderr)

    def test_cli_revocation_reaches_a_running_server(self):
        gh = Gatehouse(BINARY).start()
        try:
            admin = {"Authorization": f"Bearer {gh.key}"}
            k = requests.post(f"{gh.url}/v1/orgs/{gh.org}/keys", headers=admin,
                              json={"label": "r", "scopes": ["read:findings"]}).json()
            auth = {"X-API-Key": k["key"]}
            self.assertEqual(requests.get(f"{gh.url}/api/v1/findings", headers=auth).status_code, 200)
            run(BINARY, "keys", "revoke", "--org", gh.org, k["id"], "--data-dir", gh.data_dir)
            deadline = time.time() + 1.0
            status = 200
            while time.time() < deadline and status == 200:
                status = requests.get(f"{gh.url}/api/v1/findings", headers=auth).status_code
                time.sleep(0.02)
            self.assertEqual(status, 401)
        finally:
            gh.stop()

    def test_tls_and_certificate_reload(self):
        cert, key = make_cert(self.dir, "one", 1111)
        listener = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
        gh = Gatehouse(BINARY, listener_extra=listener).start()
        try:
            ctx = ssl.create_default_context(cafile=cert)
            kept = http.client.HTTPSConnection("127.0.0.1", gh.port, context=ctx)
            kept.request("GET", "/healthz")
            self.assertEqual(kept.getresponse().read(), b'{"status":"ok"}')
            self.assertIn(kept.sock.version(), ("TLSv1.3", "TLSv1.2"))
            # TLS 1.1 is refused even when the client offers nothing newer.
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.check_hostname = False
            old.verify_mode = ssl.CERT_NONE
            old.set_ciphers("DEFAULT:@SECLEVEL=0")
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            with self.assertRaises((ssl.SSLError, ConnectionResetError)):
                c = http.client.HTTPSConnection("127.0.0.1", gh.port, context=old)
                c.request("GET", "/healthz")
                c.getresponse()
            # Replace the certificate files and send SIGHUP.
            new_cert, new_key = make_cert(self.dir, "two", 2222)
            os.replace(new_cert, cert)
            os.replace(new_key, key)
            gh.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            kept.request("GET", "/healthz")  # the open connection survives the reload
            self.assertEqual(kept.getresponse().status, 200)
            fresh = http.client.HTTPSConnection("127.0.0.1", gh.port,
                                                context=ssl.create_default_context(cafile=cert))
            fresh.request("GET", "/healthz")
            self.assertEqual(fresh.getresponse().status, 200)
            der = fresh.sock.getpeercert(binary_form=True)
            serial = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
                                    input=der, capture_output=True, check=True).stdout
            self.assertIn(b"08AE", serial)  # 2222
        finally:
            gh.stop()

    def test_websocket_through_a_tls_listener(self):
        # An upstream that switches protocols, says hello, echoes in capitals and closes on "bye".
        upstream = socket.socket()
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(1)

        def serve():
            conn, _ = upstream.accept()
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\nhello;")
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data.upper())
                if b"bye" in data:
                    break
            conn.close()

        threading.Thread(target=serve, daemon=True).start()
        cert, key = make_cert(self.dir, "ws", 3333)
        route = (f'[[routes]]\nname = "live"\npath_prefix = "/live"\n'
                 f'upstream = "http://127.0.0.1:{upstream.getsockname()[1]}"\n'
                 f'scopes = ["read:findings"]\nwebsocket = true\n')
        gh = Gatehouse(BINARY, extra_config=route,
                       listener_extra=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n').start()
        try:
            ctx = ssl.create_default_context(cafile=cert)
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", gh.port)),
                                 server_hostname="127.0.0.1") as c:
                c.settimeout(5)
                c.sendall(b"GET /live/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\n"
                          b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Authorization: Bearer " + gh.key.encode() + b"\r\n\r\n")
                got = b""
                while b"hello;" not in got:
                    got += c.recv(4096)
                self.assertTrue(got.startswith(b"HTTP/1.1 101 "), got)
                c.sendall(b"abc;")
                while b"ABC;" not in got:
                    got += c.recv(4096)
                c.sendall(b"bye")
                while b"BYE" not in got:
                    got += c.recv(4096)
                # The upstream's close ends the tunnel: the client sees the end too.
                end = time.time() + 5
                closed = False
                while time.time() < end and not closed:
                    try:
                        closed = c.recv(4096) == b""
                    except ssl.SSLError:
                        closed = True
                self.assertTrue(closed)
        finally:
            gh.stop()
            upstream.close()


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
