"""A real nginx in front, using gatehouse as its auth_request service; the identity headers
gatehouse returns travel to the upstream (gatehouse's demo echo)."""
import os
import shutil
import subprocess
import sys
import time
import unittest

import requests

from ghtest import Gatehouse, free_port

BINARY = sys.argv[1]


class NginxAuthRequestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gh = Gatehouse(BINARY).start()
        cls.nginx_port = free_port()
        d = cls.gh.dir
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{cls.nginx_port};
    location = /_gatehouse {{
      internal;
      proxy_pass http://127.0.0.1:{cls.gh.port}/v1/authz/check;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}
    location / {{
      auth_request /_gatehouse;
      auth_request_set $gh_org $upstream_http_x_gatehouse_org;
      auth_request_set $gh_principal $upstream_http_x_gatehouse_principal;
      auth_request_set $gh_scopes $upstream_http_x_gatehouse_scopes;
      proxy_set_header X-Gatehouse-Org $gh_org;
      proxy_set_header X-Gatehouse-Principal $gh_principal;
      proxy_set_header X-Gatehouse-Scopes $gh_scopes;
      proxy_set_header Authorization "";
      proxy_pass http://127.0.0.1:{cls.gh.echo_port};
    }}
  }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        subprocess.run([nginx, "-c", conf, "-p", d, "-g", "daemon on; master_process on;"],
                       check=True)
        cls.pid_file = os.path.join(d, "nginx.pid")
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{cls.nginx_port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        admin = {"Authorization": f"Bearer {cls.gh.key}"}
        r = requests.post(f"{cls.gh.url}/v1/orgs/{cls.gh.org}/keys", headers=admin,
                          json={"label": "reader", "scopes": ["read:findings"]})
        cls.reader = r.json()["key"]
        cls.reader_id = r.json()["id"]

    @classmethod
    def tearDownClass(cls):
        try:
            pid = int(open(cls.pid_file).read())
            os.kill(pid, 15)
        except (OSError, ValueError):
            pass
        cls.gh.stop()

    def get(self, path, key=None, method="GET"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.request(method, f"http://127.0.0.1:{self.nginx_port}{path}", headers=headers)

    def test_allowed_request_reaches_upstream_with_identity(self):
        r = self.get("/api/v1/findings/7?x=1", self.reader)
        self.assertEqual(r.status_code, 200, r.text)
        echo = r.json()
        self.assertEqual(echo["headers"]["X-Gatehouse-Org"], self.gh.org)
        self.assertEqual(echo["headers"]["X-Gatehouse-Principal"], self.reader_id)
        self.assertEqual(echo["headers"]["X-Gatehouse-Scopes"], "read:findings")

    def test_missing_and_bad_keys_are_401(self):
        self.assertEqual(self.get("/api/v1/findings").status_code, 401)
        self.assertEqual(self.get("/api/v1/findings", "sk_live_garbage").status_code, 401)

    def test_missing_scope_and_unknown_route_are_403(self):
        self.assertEqual(self.get("/api/v1/evidence", self.reader, "POST").status_code, 403)
        self.assertEqual(self.get("/not/configured", self.reader).status_code, 403)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
