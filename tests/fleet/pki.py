"""`Pki`: Debian's pebble (an ACME test CA) and a real `caddy run` getting certificates from it:
Caddy 2.11 built by scripts/setup.sh by default, Debian 12's Caddy 2.6 with `caddy="debian"`."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from cryptography import x509

from . import rundirs
from .hostspec import storage_name
from .requirements import DEBIAN_CADDY, caddy_binary, caddy_version
from .slot import loopback
from .waiting import port_open, wait_for
from .x509util import (
    key_matches_certificate,
    leaf_certificate,
    local_ca_and_server,
    sha256_fingerprint,
)

CURRENT_CADDY = "current"  # Caddy 2.11, built by scripts/setup.sh (requirements.caddy_binary())
DEBIAN_CADDY_FLAVOR = "debian"  # Debian 12's /usr/bin/caddy, 2.6
# Each flavor has its own address, so a Pki of each can run at once (session and module fixtures).
PKI_ADDRESSES = {CURRENT_CADDY: loopback(1), DEBIAN_CADDY_FLAVOR: loopback(2)}
PEBBLE_ADDRESS = PKI_ADDRESSES[CURRENT_CADDY]
PEBBLE_PORT = 14000  # fixed: the issuer folder name in Caddy's storage is derived from it
PEBBLE_MANAGEMENT_PORT = 15000
ACME_DIRECTORY = f"https://{PEBBLE_ADDRESS}:{PEBBLE_PORT}/dir"
ISSUER_FOLDER = f"{PEBBLE_ADDRESS}-{PEBBLE_PORT}-dir"  # the default Pki's: pki.issuer_folder()
CADDY_HTTP_PORT = 18080
CADDY_HTTPS_PORT = 18443
ISSUE_TIMEOUT = 90.0  # caddy retries a failed order after 60 s
SLOW_ISSUE = 10.0
CADDY_ORDERS_PER_START = 10
# Wildcards need the DNS challenge, which Debian's caddy cannot answer: Caddy's own CA
# (`tls internal`, 12-hour certificates) issues them, stored under this issuer folder.
LOCAL_ISSUER_FOLDER = "local"
# The site's `tls` `key_type` values (None: Caddy's default, ECDSA P-256).
KEY_TYPES = ("p256", "p384", "rsa2048", "rsa4096", "ed25519")
REUSE_PRIVATE_KEYS_SINCE = (2, 8)
NEW_KEY_AT_RENEWAL_SINCE = (2, 7)
# Since 2.10 Caddy gets no certificate of its own for a name that a wildcard it manages covers
# (it serves the wildcard's), unless the name's site says `force_automate`. And Caddy 2.11 puts
# the sites without `tls` options in a catch-all policy after the wildcard's (`tls internal`):
# a name under the wildcard would get its certificate from Caddy's own CA; an explicit key_type
# (P-256, the default) gives it a policy of its own, with pebble.
WILDCARD_PREFERRED_SINCE = (2, 10)
DEFAULT_KEY_TYPE = "p256"


def issuer_folder(name: str) -> str:
    """The issuer folder of `name` in the default Pki's storage (any Pki: `pki.issuer_folder`)."""
    return LOCAL_ISSUER_FOLDER if name.startswith("*.") else ISSUER_FOLDER


class Site(NamedTuple):
    """How Caddy's site for a name is configured: the `tls` block's `key_type` (None: Caddy's
    default) and `reuse_private_keys` (Caddy >= 2.8); `force_automate` (Caddy >= 2.10) for a
    name under one of the Pki's wildcards: False leaves it without a certificate of its own."""

    key_type: str | None = None
    reuse_private_keys: bool = False
    force_automate: bool = True


class Pki:
    """pebble on 127.0.s.1:14000 (s: the process's slot, tests/fleet/slot.py) and Caddy 2.11;
    with `caddy="debian"`, on 127.0.s.2 with Debian's Caddy 2.6. Caddy stores certificates in
    `data_dir` (XDG_DATA_HOME/caddy).

    `caddy_binary`, `caddy_version` (e.g. (2, 11, 9)) say which Caddy runs; `sites` how each
    name's site is configured (`issue(..., key_type=, reuse_private_keys=)`);
    `renewal_keeps_key(name)` whether Caddy's renewal of it keeps the private key.

    Use as a context manager; `close()` stops both and removes the run directory.
    """

    def __init__(self, caddy: str = CURRENT_CADDY) -> None:
        if caddy not in PKI_ADDRESSES:
            raise ValueError(f"caddy={caddy!r}: one of {sorted(PKI_ADDRESSES)}")
        self.caddy_flavor = caddy
        self.caddy_binary = caddy_binary() if caddy == CURRENT_CADDY else DEBIAN_CADDY
        self.caddy_version = caddy_version(self.caddy_binary)
        self.address = PKI_ADDRESSES[caddy]
        self.acme_directory = f"https://{self.address}:{PEBBLE_PORT}/dir"
        self.acme_issuer_folder = f"{self.address}-{PEBBLE_PORT}-dir"
        self.names: list[str] = []
        self.sites: dict[str, Site] = {}
        self.timings: dict[str, float] = {}
        self._pebble: subprocess.Popen[bytes] | None = None
        self._caddy: subprocess.Popen[bytes] | None = None
        rundirs.reap_stale_runs()
        for port in (PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT, CADDY_HTTP_PORT, CADDY_HTTPS_PORT):
            if port_open(self.address, port):
                raise RuntimeError(
                    f"{self.address}:{port} is already in use; is another Pki running?"
                )
        self.run_dir = rundirs.new_run_dir("pki")
        self.data_dir = self.run_dir / "xdg" / "caddy"
        self.pebble_ca_file = self.run_dir / "pebble-https-ca.pem"
        self.caddyfile = self.run_dir / "Caddyfile"
        self.caddy_json = self.run_dir / "caddy.json"  # the Caddyfile adapted, for a renewal
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
        ca_pem, server = local_ca_and_server("pebble", self.address)
        self.pebble_ca_file.write_bytes(ca_pem)
        (self.run_dir / "pebble-https.crt").write_bytes(server.cert_pem)
        (self.run_dir / "pebble-https.key").write_bytes(server.key_pem)
        config = {
            "pebble": {
                "listenAddress": f"{self.address}:{PEBBLE_PORT}",
                "managementListenAddress": f"{self.address}:{PEBBLE_MANAGEMENT_PORT}",
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
            f"pebble on {self.acme_directory} (log: {self.pebble_log})",
        )

    def _pebble_answers(self) -> bool:
        assert self._pebble is not None
        if self._pebble.poll() is not None:
            raise RuntimeError(f"pebble exited: {self.pebble_log.read_text()[-2000:]}")
        return "newOrder" in self._https_get(self.acme_directory).decode()

    def _https_get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.pebble_ca_file))
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            body: bytes = response.read()
            return body

    def issuing_root_pem(self) -> bytes:
        """PEM of the root pebble signs certificates with (it makes a new one at every start)."""
        return self._https_get(f"https://{self.address}:{PEBBLE_MANAGEMENT_PORT}/roots/0")

    # -- caddy -----------------------------------------------------------------------------------
    @property
    def caddy_version_text(self) -> str:
        return ".".join(map(str, self.caddy_version))

    def renewal_keeps_key(self, name: str) -> bool:
        """Whether Caddy's renewal of `name` keeps its private key: always before Caddy 2.7,
        since then only with `reuse_private_keys`."""
        site = self.sites[name.lower()]
        return self.caddy_version[:2] < NEW_KEY_AT_RENEWAL_SINCE or site.reuse_private_keys

    def _write_caddyfile(self) -> None:
        lines = [
            "{",
            "\tadmin off",
            f"\tacme_ca {self.acme_directory}",
            f"\tacme_ca_root {self.pebble_ca_file}",
            f"\thttp_port {CADDY_HTTP_PORT}",
            f"\thttps_port {CADDY_HTTPS_PORT}",
            f"\tdefault_bind {self.address}",
            "\tskip_install_trust",
            "}",
        ]
        for name in self.names:
            lines += ["", f"{name} {{", *self._tls_lines(name), '\trespond "certsync e2e"', "}"]
        self.caddyfile.write_text("\n".join(lines) + "\n")

    def _tls_lines(self, name: str) -> list[str]:
        site = self.sites[name]
        under_a_wildcard = self._under_a_wildcard(name)
        key_type = site.key_type or (DEFAULT_KEY_TYPE if under_a_wildcard else None)
        options = [f"\t\tkey_type {key_type}"] if key_type else []
        options += ["\t\treuse_private_keys"] if site.reuse_private_keys else []
        argument = ""
        if name.startswith("*."):
            argument = " internal"
        elif under_a_wildcard and site.force_automate and self._wildcard_preferred():
            argument = " force_automate"
        if not options:
            return [f"\ttls{argument}"] if argument else []
        return [f"\ttls{argument} {{", *options, "\t}"]

    def _under_a_wildcard(self, name: str) -> bool:
        parent = name.partition(".")[2]
        return not name.startswith("*.") and f"*.{parent}" in self.names

    def _wildcard_preferred(self) -> bool:
        return self.caddy_version[:2] >= WILDCARD_PREFERRED_SINCE

    def gets_own_certificate(self, name: str) -> bool:
        """False for a name Caddy serves with a wildcard's certificate, storing none for it."""
        wildcards_only = self._wildcard_preferred() and not self.sites[name].force_automate
        return not (wildcards_only and self._under_a_wildcard(name))

    def _write_renewal_config(self, name: str) -> None:
        """caddy.json: the Caddyfile adapted, with `name` due for renewal at once (an automation
        policy of its own whose renewal window is the certificate's whole lifetime). The
        Caddyfile of Caddy 2.6 has no renewal_window_ratio; its JSON has."""
        adapted = subprocess.run(
            [
                str(self.caddy_binary),
                "adapt",
                "--config",
                str(self.caddyfile),
                "--adapter",
                "caddyfile",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env=self._caddy_env(),
        ).stdout
        config = json.loads(adapted)
        policies: list[dict[str, Any]] = config["apps"]["tls"]["automation"]["policies"]
        # Caddy uses the first policy naming the name, else the first one without subjects.
        index = next(
            i
            for i, policy in enumerate(policies)
            if name in policy.get("subjects", (name,))  # no subjects: every name
        )
        policy = policies[index]
        subjects = policy.get("subjects")
        if subjects == [name]:
            del policies[index]
        elif isinstance(subjects, list):
            policy["subjects"] = [subject for subject in subjects if subject != name]
        policies.insert(0, {**policy, "subjects": [name], "renewal_window_ratio": 1.0})
        self.caddy_json.write_text(json.dumps(config, indent=2))

    def _stop_caddy(self) -> None:
        if self._caddy is not None:
            rundirs.kill_pids([self._caddy.pid])
            self._caddy.wait()
            self._caddy = None

    def _caddy_env(self) -> dict[str, str]:
        return {
            **self._env(),
            "HOME": str(self.run_dir),
            "XDG_DATA_HOME": str(self.run_dir / "xdg"),
            "XDG_CONFIG_HOME": str(self.run_dir / "xdg-config"),
        }

    def _start_caddy(self, renewing: str | None = None) -> None:
        self._write_caddyfile()
        config = ["--config", str(self.caddyfile), "--adapter", "caddyfile"]
        if renewing is not None:
            self._write_renewal_config(renewing)
            config = ["--config", str(self.caddy_json)]
        self._caddy = self._spawn(
            [str(self.caddy_binary), "run", *config], self._caddy_env(), self.caddy_log
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
    def issuer_folder(self, name: str) -> str:
        return LOCAL_ISSUER_FOLDER if name.startswith("*.") else self.acme_issuer_folder

    def name_dir(self, name: str) -> Path:
        return self.data_dir / "certificates" / self.issuer_folder(name) / storage_name(name)

    def cert_path(self, name: str) -> Path:
        return self.name_dir(name) / f"{storage_name(name)}.crt"

    def key_path(self, name: str) -> Path:
        return self.name_dir(name) / f"{storage_name(name)}.key"

    def certificate(self, name: str) -> x509.Certificate:
        return leaf_certificate(self.cert_path(name).read_bytes())

    def _complete_certificate(self, name: str) -> x509.Certificate | None:
        """The stored certificate once crt, key and json are all written, the key matches and
        Caddy has released its lock on the name (it holds it until all three are written)."""
        meta = self.name_dir(name) / f"{storage_name(name)}.json"
        if not (self.cert_path(name).exists() and self.key_path(name).exists() and meta.exists()):
            return None
        if (self.data_dir / "locks" / f"issue_cert_{storage_name(name)}.lock").exists():
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

    def issue(
        self,
        names: Iterable[str],
        key_type: str | None = None,
        reuse_private_keys: bool = False,
        force_automate: bool = True,
    ) -> dict[str, x509.Certificate]:
        """Make caddy obtain certificates for `names` (added to those it has) and wait for them.

        A name's site gets the `tls` options `key_type` (one of KEY_TYPES; None: Caddy's
        default, P-256) and `reuse_private_keys` (Caddy >= 2.8); a name Caddy already has must
        be asked for with the options it was issued with. With `force_automate=False`, a name
        under one of the Pki's wildcards gets no certificate on Caddy >= 2.10 (see `Site`):
        it is not waited for, nor returned.
        """
        wanted = [name.lower() for name in names]
        site = self._site(key_type, reuse_private_keys, force_automate)
        for name in wanted:
            if self.sites.setdefault(name, site) != site:
                raise ValueError(f"{name} was issued with {self.sites[name]}, not {site}")
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
        issued = {
            name: self._wait_for_certificate(name)
            for name in wanted
            if self.gets_own_certificate(name)
        }
        self._record(f"issue {len(wanted)} names", started)
        return issued

    def _site(self, key_type: str | None, reuse_private_keys: bool, force_automate: bool) -> Site:
        if key_type is not None and key_type not in KEY_TYPES:
            raise ValueError(f"key_type {key_type!r}: one of {KEY_TYPES}")
        if reuse_private_keys and self.caddy_version[:2] < REUSE_PRIVATE_KEYS_SINCE:
            raise ValueError(f"Caddy {self.caddy_version_text} has no reuse_private_keys (2.8+)")
        return Site(key_type, reuse_private_keys, force_automate)

    def _issue_batch(self, names: list[str]) -> None:
        self.names += names
        self.restart_caddy()
        for name in filter(self.gets_own_certificate, names):
            self._wait_for_certificate(name)

    def _has_acme_account(self) -> bool:
        return any((self.data_dir / "acme" / self.acme_issuer_folder / "users").glob("*/*.key"))

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
            and "skipped because it requires TLS" not in line  # HTTP/2, HTTP/3 on the HTTP port
            and "exiting; byeee" not in line
        ]

    def renewals_logged(self, name: str) -> int:
        """How many times Caddy's log says it renewed `name` (a renewal, not a first order)."""
        return sum(
            '"msg":"certificate renewed successfully"' in line and f'"identifier":"{name}"' in line
            for line in self.caddy_log.read_text().splitlines()
        )

    def renew(self, name: str) -> x509.Certificate:
        """Make Caddy renew `name` as it does when a certificate is due, and return the new one.

        The stored certificate is left in place and Caddy restarted with `name` due at once
        (caddy.json: its renewal window is the whole lifetime), so Caddy renews it from its own
        storage: with the same private key when `renewal_keeps_key(name)`, else a new one.
        Caddy is then restarted with the plain Caddyfile, so that it does not renew it again.
        """
        name = name.lower()
        old = sha256_fingerprint(self.certificate(name))
        self._stop_caddy()
        started = time.monotonic()
        self._start_caddy(renewing=name)
        cert = self._wait_for_certificate(name, different_from=old)
        self._record(f"renew {name}", started)
        self.restart_caddy()
        return cert
