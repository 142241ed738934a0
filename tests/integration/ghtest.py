"""Helpers for the Python integration tests: a real gatehouse process on a free port, with a
temporary data directory, and the demo echo upstream on another free port."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, *args, env=None, check=True):
    p = subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and p.returncode != 0:
        raise RuntimeError(f"{args} failed ({p.returncode}): {p.stderr}")
    return p


class Gatehouse:
    """`gatehouse init` then `gatehouse serve` with a generated config."""

    def __init__(self, binary, extra_config="", listener_extra="", data_dir=None):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="gatehouse-py-")
        self.data_dir = data_dir or os.path.join(self.dir, "data")
        self.echo_port = free_port()
        if not os.path.exists(os.path.join(self.data_dir, "gatehouse.db")):
            out = run(binary, "init", "--data-dir", self.data_dir, "--json").stdout
            info = json.loads(out)
            self.org, self.key = info["org_id"], info["api_key"]
        self.config = os.path.join(self.dir, "gatehouse.toml")
        with open(self.config, "w") as f:
            f.write(f'data_dir = "{self.data_dir}"\n')
            f.write('scopes = ["read:findings", "write:evidence"]\n')
            f.write(extra_config)
            f.write(f'\n[[listeners]]\naddress = "127.0.0.1:0"\n{listener_extra}\n')
            f.write(f'[demo]\necho_listen = "127.0.0.1:{self.echo_port}"\n')
            f.write(f'[[routes]]\nname = "findings"\npath_prefix = "/api/v1/findings"\n'
                    f'upstream = "http://127.0.0.1:{self.echo_port}"\nscopes = ["read:findings"]\n')
            f.write(f'[[routes]]\nname = "evidence"\npath_prefix = "/api/v1/evidence"\n'
                    f'upstream = "http://127.0.0.1:{self.echo_port}"\nscopes = ["write:evidence"]\n')
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc = None
        self.port = None

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            text = self.output()
            for line in text.splitlines():
                if line.startswith('{"listening"'):
                    self.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError("gatehouse exited: " + text)
            time.sleep(0.02)
        raise RuntimeError("gatehouse did not start: " + self.output())

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
