"""`Pki`: Debian's pebble (an ACME test CA) and a real `caddy run` getting certificates from it."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from cryptography import x509

from . import rundirs
from .hostspec import storage_name
from .slot import loopback
from .waiting import port_open, wait_for
from .x509util import (
    key_matches_certificate,
    leaf_certificate,
    local_ca_and_server,
    sha256_fingerprint,
)

PEBBLE_ADDRESS = loopback(1)
PEBBLE_PORT = 14000  # fixed: the issuer folder name in Caddy's storage is derived from it
PEBBLE_MANAGEMENT_PORT = 15000
ACME_DIRECTORY = f"https://{PEBBLE_ADDRESS}:{PEBBLE_PORT}/dir"
ISSUER_FOLDER = f"{PEBBLE_ADDRESS}-{PEBBLE_PORT}-dir"
CADDY_HTTP_PORT = 18080
CADDY_HTTPS_PORT = 18443
ISSUE_TIMEOUT = 90.0  # caddy retries a failed order after 60 s
SLOW_ISSUE = 10.0
CADDY_ORDERS_PER_START = 10
# Wildcards need the DNS challenge, which Debian's caddy cannot answer: Caddy's own CA
# (`tls internal`, 12-hour certificates) issues them, stored under this issuer folder.
LOCAL_ISSUER_FOLDER = "local"


def issuer_folder(name: str) -> str:
    return LOCAL_ISSUER_FOLDER if name.startswith("*.") else ISSUER_FOLDER


class Pki:
    """pebble on 127.0.s.1:14000 (s: the process's slot, tests/fleet/slot.py); caddy stores
    certificates in `data_dir` (XDG_DATA_HOME/caddy).

    Use as a context manager; `close()` stops both and removes the run directory.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.timings: dict[str, float] = {}
        self._pebble: subprocess.Popen[bytes] | None = None
        self._caddy: subprocess.Popen[bytes] | None = None
        rundirs.reap_stale_runs()
        for port in (PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT, CADDY_HTTP_PORT, CADDY_HTTPS_PORT):
            if port_open(PEBBLE_ADDRESS, port):
                raise RuntimeError(
                    f"{PEBBLE_ADDRESS}:{port} is already in use; is another Pki running?"
                )
        self.run_dir = rundirs.new_run_dir("pki")
        self.data_dir = self.run_dir / "xdg" / "caddy"
        self.pebble_ca_file = self.run_dir / "pebble-https-ca.pem"
        self.caddyfile = self.run_dir / "Caddyfile"
        self.pebble_log = self.run_dir / "pebble.log"
        self.caddy_log = self.run_dir / "caddy.log"

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Pki:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        started = time.monotonic()
        self._start_pebble()
        self.timings["pebble_start"] = time.monotonic() - started

    def close(self) -> None:
        for process in (self._caddy, self._pebble):
            if process is not None:
                rundirs.kill_pids([process.pid])
                process.wait()
        self._caddy = self._pebble = None
        rundirs.reap_run(self.run_dir)  # anything else carrying the run marker, then the files

    # -- pebble ----------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {**os.environ, rundirs.RUN_ENV: str(self.run_dir)}

    def _start_pebble(self) -> None:
        ca_pem, server = local_ca_and_server("pebble", PEBBLE_ADDRESS)
        self.pebble_ca_file.write_bytes(ca_pem)
        (self.run_dir / "pebble-https.crt").write_bytes(server.cert_pem)
        (self.run_dir / "pebble-https.key").write_bytes(server.key_pem)
        config = {
            "pebble": {
                "listenAddress": f"{PEBBLE_ADDRESS}:{PEBBLE_PORT}",
                "managementListenAddress": f"{PEBBLE_ADDRESS}:{PEBBLE_MANAGEMENT_PORT}",
                "certificate": str(self.run_dir / "pebble-https.crt"),
                "privateKey": str(self.run_dir / "pebble-https.key"),
                # Challenges are never really validated (PEBBLE_VA_ALWAYS_VALID), these stay unused.
                "httpPort": CADDY_HTTP_PORT,
                "tlsPort": CADDY_HTTPS_PORT,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        config_file = self.run_dir / "pebble-config.json"
        config_file.write_text(json.dumps(config, indent=2))
        env = {
            **self._env(),
            "PEBBLE_VA_ALWAYS_VALID": "1",
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",  # pebble otherwise rejects 5% of nonces on purpose
        }
        self._pebble = self._spawn(["pebble", "-config", str(config_file)], env, self.pebble_log)
        wait_for(
            lambda: self._pebble_answers(),
            20,
            f"pebble on {ACME_DIRECTORY} (log: {self.pebble_log})",
        )

    def _pebble_answers(self) -> bool:
        assert self._pebble is not None
        if self._pebble.poll() is not None:
            raise RuntimeError(f"pebble exited: {self.pebble_log.read_text()[-2000:]}")
        return "newOrder" in self._https_get(ACME_DIRECTORY).decode()

    def _https_get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.pebble_ca_file))
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            body: bytes = response.read()
            return body

    def issuing_root_pem(self) -> bytes:
        """PEM of the root pebble signs certificates with (it makes a new one at every start)."""
        return self._https_get(f"https://{PEBBLE_ADDRESS}:{PEBBLE_MANAGEMENT_PORT}/roots/0")

    # -- caddy -----------------------------------------------------------------------------------
    def _write_caddyfile(self) -> None:
        lines = [
            "{",
            "\tadmin off",
            f"\tacme_ca {ACME_DIRECTORY}",
            f"\tacme_ca_root {self.pebble_ca_file}",
            f"\thttp_port {CADDY_HTTP_PORT}",
            f"\thttps_port {CADDY_HTTPS_PORT}",
            f"\tdefault_bind {PEBBLE_ADDRESS}",
            "\tskip_install_trust",
            "}",
        ]
        for name in self.names:
            tls = ["\ttls internal"] if name.startswith("*.") else []
            lines += ["", f"{name} {{", *tls, '\trespond "certsync e2e"', "}"]
        self.caddyfile.write_text("\n".join(lines) + "\n")

    def _stop_caddy(self) -> None:
        if self._caddy is not None:
            rundirs.kill_pids([self._caddy.pid])
            self._caddy.wait()
            self._caddy = None

    def _start_caddy(self) -> None:
        self._write_caddyfile()
        xdg = self.run_dir / "xdg"
        env = {
            **self._env(),
            "HOME": str(self.run_dir),
            "XDG_DATA_HOME": str(xdg),
            "XDG_CONFIG_HOME": str(self.run_dir / "xdg-config"),
        }
        self._caddy = self._spawn(
            ["caddy", "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"],
            env,
            self.caddy_log,
        )

    def _spawn(
        self, argv: list[str], env: dict[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        """Start a daemon of this Pki in its own session, its output appended to `log_path`."""
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv,
                cwd=self.run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def restart_caddy(self) -> None:
        self._stop_caddy()
        self._start_caddy()

    # -- certificates ----------------------------------------------------------------------------
    def name_dir(self, name: str) -> Path:
        return self.data_dir / "certificates" / issuer_folder(name) / storage_name(name)

    def cert_path(self, name: str) -> Path:
        return self.name_dir(name) / f"{storage_name(name)}.crt"

    def key_path(self, name: str) -> Path:
        return self.name_dir(name) / f"{storage_name(name)}.key"

    def certificate(self, name: str) -> x509.Certificate:
        return leaf_certificate(self.cert_path(name).read_bytes())

    def _complete_certificate(self, name: str) -> x509.Certificate | None:
        """The stored certificate once crt, key and json are all written and the key matches."""
        meta = self.name_dir(name) / f"{storage_name(name)}.json"
        if not (self.cert_path(name).exists() and self.key_path(name).exists() and meta.exists()):
            return None
        cert = self.certificate(name)
        return cert if key_matches_certificate(self.key_path(name).read_bytes(), cert) else None

    def _wait_for_certificate(
        self, name: str, different_from: str | None = None
    ) -> x509.Certificate:
        def ready() -> x509.Certificate | None:
            assert self._caddy is not None
            if self._caddy.poll() is not None:
                raise RuntimeError(f"caddy exited: {self.caddy_log.read_text()[-3000:]}")
            cert = self._complete_certificate(name)
            if cert is None or sha256_fingerprint(cert) == different_from:
                return None
            return cert

        return wait_for(
            ready, ISSUE_TIMEOUT, f"caddy to store a certificate for {name} (log: {self.caddy_log})"
        )

    def issue(self, names: Iterable[str]) -> dict[str, x509.Certificate]:
        """Make caddy obtain certificates for `names` (added to those it has) and wait for them."""
        wanted = [name.lower() for name in names]
        started = time.monotonic()
        new = list(dict.fromkeys(name for name in wanted if name not in self.names))
        if len(new) > 1 and not self._has_acme_account():
            # caddy's parallel first orders race on the ACME account key it is still writing
            # ("could not decode account's private key") and retry after 60 s: one name first.
            self._issue_batch(new[:1])
            new = new[1:]
        # caddy holds back orders beyond 10 per 10 s; its limiter starts afresh at each start.
        for first in range(0, len(new), CADDY_ORDERS_PER_START):
            self._issue_batch(new[first : first + CADDY_ORDERS_PER_START])
        issued = {name: self._wait_for_certificate(name) for name in wanted}
        self._record(f"issue {len(wanted)} names", started)
        return issued

    def _issue_batch(self, names: list[str]) -> None:
        self.names += names
        self.restart_caddy()
        for name in names:
            self._wait_for_certificate(name)

    def _has_acme_account(self) -> bool:
        return any((self.data_dir / "acme" / ISSUER_FOLDER / "users").glob("*/*.key"))

    def _record(self, what: str, started: float) -> None:
        took = self.timings[what] = time.monotonic() - started
        if took > SLOW_ISSUE:  # usually under a second; slower means caddy hit an error and retried
            warnings.warn(
                f"{what} took {took:.1f}s; caddy's complaints: {self.caddy_problems()}",
                stacklevel=3,
            )

    def caddy_problems(self) -> list[str]:
        """caddy's log lines above level info, except expected OCSP ones (pebble has no OCSP)."""
        return [
            line
            for line in self.caddy_log.read_text().splitlines()
            if '"level":"info"' not in line
            and "OCSP" not in line
            and "admin endpoint disabled" not in line
            and "exiting; byeee" not in line
        ]

    def renew(self, name: str) -> x509.Certificate:
        """Delete `name` from caddy's storage, restart caddy, return the new (other) certificate."""
        name = name.lower()
        old = sha256_fingerprint(self.certificate(name))
        self._stop_caddy()
        shutil.rmtree(self.name_dir(name))
        started = time.monotonic()
        self._start_caddy()
        cert = self._wait_for_certificate(name, different_from=old)
        self._record(f"renew {name}", started)
        return cert
