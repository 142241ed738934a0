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
      # auth_request turns anything but 2xx/401/403 into a 500: refusals come as 403 with the
      # real status in X-Gatehouse-Status, and @gatehouse_denied gives it back.
      proxy_set_header X-Gatehouse-Deny-Status 403;
    }}
    location @gatehouse_denied {{
      add_header Retry-After $gh_retry_after always;
      default_type application/json;
      if ($gh_status = 429) {{
        return 429 '{{"error":{{"status":429,"code":"rate_limit_exceeded"}}}}';
      }}
      if ($gh_status = 503) {{
        return 503 '{{"error":{{"status":503,"code":"unavailable"}}}}';
      }}
      return 403 '{{"error":{{"status":403,"code":"forbidden"}}}}';
    }}
    location / {{
      auth_request /_gatehouse;
      auth_request_set $gh_status $upstream_http_x_gatehouse_status;
      auth_request_set $gh_retry_after $upstream_http_retry_after;
      error_page 403 = @gatehouse_denied;
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

    def test_a_rate_limited_key_gets_429_through_nginx_not_500(self):
        admin = {"Authorization": f"Bearer {self.gh.key}"}
        r = requests.post(f"{self.gh.url}/v1/orgs/{self.gh.org}/keys", headers=admin,
                          json={"label": "limited", "scopes": ["read:findings"],
                                "rate_limit": {"requests": 2, "window": "1h"}})
        self.assertEqual(r.status_code, 201, r.text)
        key = r.json()["key"]
        self.assertEqual(self.get("/api/v1/findings/1", key).status_code, 200)
        self.assertEqual(self.get("/api/v1/findings/1", key).status_code, 200)
        refused = self.get("/api/v1/findings/1", key)
        self.assertEqual(refused.status_code, 429, refused.text)
        self.assertGreater(int(refused.headers["Retry-After"]), 0)
        # Asked directly, without the header, gatehouse answers 429 as it is.
        direct = requests.get(f"{self.gh.url}/v1/authz/check",
                              headers={"Authorization": f"Bearer {key}",
                                       "X-Original-URI": "/api/v1/findings/1"})
        self.assertEqual(direct.status_code, 429)

    def test_missing_scope_and_unknown_route_are_403(self):
        self.assertEqual(self.get("/api/v1/evidence", self.reader, "POST").status_code, 403)
        self.assertEqual(self.get("/not/configured", self.reader).status_code, 403)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
