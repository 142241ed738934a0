"""How the integrators in our users' documentation call gatehouse: Python `requests` with
`Authorization: ApiKey <key>`."""
import json
import sys
import unittest

import requests

from ghtest import Gatehouse

BINARY = sys.argv[1]


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gh = Gatehouse(BINARY).start()
        cls.s = requests.Session()

    @classmethod
    def tearDownClass(cls):
        cls.s.close()
        cls.gh.stop()

    def admin(self):
        return {"Authorization": f"ApiKey {self.gh.key}"}

    def create_key(self, scopes):
        r = self.s.post(f"{self.gh.url}/v1/orgs/{self.gh.org}/keys", headers=self.admin(),
                        json={"label": "ServiceNow Integration Key", "scopes": scopes,
                              "expires_in": "90d"})
        self.assertEqual(r.status_code, 201, r.text)
        return r.json()

    def test_full_lifecycle_through_requests(self):
        created = self.create_key(["read:findings"])
        key = created["key"]
        self.assertTrue(key.startswith("sk_live_"))
        r = self.s.get(f"{self.gh.url}/api/v1/findings?page=2",
                       headers={"Authorization": f"ApiKey {key}"})
        self.assertEqual(r.status_code, 200, r.text)
        echo = self.s.get(f"{self.gh.url}/api/v1/findings", headers={"Authorization": f"ApiKey {key}"}).json()
        self.assertEqual(echo["headers"]["X-Gatehouse-Org"], self.gh.org)
        self.assertEqual(echo["headers"]["X-Gatehouse-Principal"], created["id"])
        self.assertEqual(echo["headers"]["X-Gatehouse-Scopes"], "read:findings")
        self.assertNotIn("Authorization", echo["headers"])
        listed = self.s.get(f"{self.gh.url}/v1/orgs/{self.gh.org}/keys", headers=self.admin()).json()
        ids = {k["id"]: k for k in listed["keys"]}
        self.assertIn(created["id"], ids)
        self.assertTrue(ids[created["id"]]["masked_key"].startswith("sk_live_••••"))
        self.assertNotIn(key, str(listed))
        r = self.s.delete(f"{self.gh.url}/v1/orgs/{self.gh.org}/keys/{created['id']}", headers=self.admin())
        self.assertEqual(r.json()["state"], "revoked")
        r = self.s.get(f"{self.gh.url}/api/v1/findings", headers={"Authorization": f"ApiKey {key}"})
        self.assertEqual(r.status_code, 401)
        err = r.json()["error"]
        self.assertEqual(err["code"], "unauthorized")
        self.assertEqual(err["request_id"], r.headers["X-Request-Id"])

    def test_a_user_agent_that_is_not_utf8_comes_back_as_json(self):
        key = self.create_key(["read:findings"])["key"]
        r = self.s.get(f"{self.gh.url}/api/v1/findings",
                       headers={"Authorization": f"ApiKey {key}", "User-Agent": b"caf\xff"})
        self.assertEqual(r.status_code, 200, r.text)
        # The demo echo's JSON, decoded strictly (requests' own .json() would mend bad bytes).
        echo = json.loads(r.content.decode("utf-8"))
        self.assertEqual(echo["headers"]["User-Agent"], "caf\ufffd")
        events = self.s.get(f"{self.gh.url}/v1/orgs/{self.gh.org}/audit?action=auth.proxy",
                            headers=self.admin()).json()["events"]
        self.assertIn("caf\ufffd", [e["user_agent"] for e in events])

    def test_errors_are_json_with_the_documented_shape(self):
        r = self.s.post(f"{self.gh.url}/v1/orgs/{self.gh.org}/keys", headers=self.admin(),
                        json={"label": "x", "scopes": ["no:such"]})
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.headers["Content-Type"], "application/json; charset=utf-8")
        body = r.json()["error"]
        self.assertEqual(set(body) >= {"status", "code", "message", "request_id"}, True)
        self.assertEqual(body["field"], "scopes")
        r = self.s.get(f"{self.gh.url}/v1/orgs/org_other/keys", headers=self.admin())
        self.assertEqual((r.status_code, r.json()["error"]["code"]), (403, "org_mismatch"))

    def test_verify_endpoint(self):
        # An admin key holds keys:verify too.
        customer = self.create_key(["read:findings"])
        r = self.s.post(f"{self.gh.url}/v1/keys/verify", headers=self.admin(),
                        json={"key": customer["key"], "scopes": ["read:findings"]})
        self.assertEqual(r.json()["code"], "valid")
        self.assertEqual(r.json()["org_id"], self.gh.org)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
