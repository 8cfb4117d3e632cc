"""The deployment of docs/deploy.md, stood up on this machine: Debian's nginx terminating TLS
(a self-signed certificate made with openssl) on 127.0.0.1, with the shipped site file, in front
of two `python -m mcmcp.serve` processes on one PostgreSQL database; a participant in Chromium
goes through https from the link to the completion code, answered by both processes; the
systemd unit's command line is one `mcmcp.serve` accepts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx2
import pytest
from orphans import popen
from playwright.async_api import async_playwright
from webserver import BROWSER_ARGS, CHROMIUM, ROOT, Server, free_port

from mcmcp.online.database import Database
from tests.online.test_serve import ONLINE, online_config
from tests.online.test_web_browser import take_part

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DEPLOY = ROOT / "docs" / "deploy"


def certificate(folder: Path) -> tuple[Path, Path, str]:
    """A self-signed certificate for 127.0.0.1: (cert, key, base64 sha256 of its public key,
    which Chromium is told to trust and nothing else)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                    str(key), "-out", str(cert)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der,
                         check=True, capture_output=True).stdout
    return cert, key, base64.b64encode(hashlib.sha256(der).digest()).decode()


def site(https: int, http: int, upstreams: list[int], cert: Path, key: Path) -> str:
    """The shipped site file with this test's ports, certificate and host name."""
    text = (DEPLOY / "nginx.conf").read_text()
    swaps = [("server 127.0.0.1:8001 ", f"server 127.0.0.1:{upstreams[0]} "),
             ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{upstreams[1]} "),
             ("    listen 80;\n", f"    listen 127.0.0.1:{http};\n"),
             ("    listen [::]:80;\n", ""),
             ("    listen 443 ssl;\n", f"    listen 127.0.0.1:{https} ssl;\n"),
             ("    listen [::]:443 ssl;\n", ""),
             ("/etc/ssl/mcmcp/fullchain.pem", str(cert)),
             ("/etc/ssl/mcmcp/privkey.pem", str(key)),
             ("study.example.org", "127.0.0.1")]
    for old, new in swaps:
        assert old in text, f"docs/deploy/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx in the foreground with a config of its own in `folder`."""

    def __init__(self, folder: Path, site_text: str, https: int):
        self.folder, self.https = folder, https
        (folder / "site.conf").write_text(site_text)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\n"
            f"error_log {folder}/error.log;\nevents {{ worker_connections 256; }}\n"
            "http {\n  log_format upstream '$upstream_addr $status $request';\n"
            f"  access_log {folder}/access.log upstream;\n"
            f"  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
            f"  include {folder}/site.conf;\n}}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Nginx:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        args = [nginx, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf")]
        subprocess.run([*args, "-t"], check=True, capture_output=True)
        self.proc = popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                httpx2.get(f"https://127.0.0.1:{self.https}/", verify=False, timeout=5)
                return self
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            self.proc.wait(timeout=30)


def test_nginx_tls_two_processes_postgres_in_chromium(tmp_path, postgres):
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.fail("nginx is missing: apt-get install nginx-light (the Makefile's setup does)")
    https, http = free_port(), free_port()
    base = f"https://127.0.0.1:{https}"
    config = online_config(tmp_path, gate={"kind": "none"}, online={  # the page draws the faces
        **ONLINE, "redirect_url": f"{base}/experimenter?from=study", "faces": "browser"})
    url = postgres.new_database()
    cert, key, pin = certificate(tmp_path)
    servers = [Server(config, url, tmp_path / f"server{i}.log") for i in range(2)]
    nginx = Nginx(tmp_path, site(https, http, [s.port for s in servers], cert, key), https)

    async def participant():
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
                *BROWSER_ARGS, f"--ignore-certificate-errors-spki-list={pin}"])
            result = await take_part(browser, base, "T1", "keys")
            await browser.close()
            return result

    try:
        for server in servers:
            server.start()
        nginx.start()
        redirect = httpx2.get(f"http://127.0.0.1:{http}/?participant=X", follow_redirects=False)
        assert redirect.status_code == 301
        assert redirect.headers["location"].startswith("https://127.0.0.1/")
        result = asyncio.run(participant())
    finally:
        nginx.stop()
        for server in servers:
            server.stop()

    assert result["errors"] == [] and result["code"] == "CODE-123"
    [record] = Database(url).all_sessions()
    assert record.status == "complete" and record.shown == len(result["chosen"])
    served = (tmp_path / "access.log").read_text()
    for server in servers:  # no stickiness: both processes answered the participant
        assert re.search(rf"127\.0\.0\.1:{server.port} 200 POST /api/answer", served), served
    # the page's decoder read the model and the child through nginx, over https
    assert re.search(r" 200 GET /api/decoder ", served) and "200 GET /api/decoder?child=" in served


def test_systemd_unit_runs_a_command_serve_accepts():
    from mcmcp.serve import build_parser

    unit = (DEPLOY / "mcmcp-serve@.service").read_text()
    [line] = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[1:3] == ["-m", "mcmcp.serve"]
    args = [a.replace("%i", "8001").replace("${MCMCP_DB}", "postgresql+psycopg://u@/db")
            for a in argv[3:]]
    parsed = build_parser().parse_args(args)
    assert parsed.port == 8001 and parsed.host == "127.0.0.1" and parsed.workers == 1
    assert "RestartPreventExitStatus=2" in unit  # start-up mistakes exit 2: never restarted
