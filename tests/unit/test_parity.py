"""One decision: for each case of README's reliability table that a tmp dir can hold, the plan
`state` shows (what the deploy's preview prints) is what `sync` then does on the same state."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certsync.host.cli import run_sync
from certsync.host.output import Log
from tests.fleet.x509util import self_signed
from tests.unit.certs import (
    DAY,
    HOUR,
    LETSENCRYPT,
    NOW,
    ZEROSSL,
    Ca,
    Issued,
    caddy_key_pem,
    cert_pem,
    key_of,
    remember_installed,
    write_caddy,
)
from tests.unit.conftest import MakeFakeMox
from tests.unit.fakemox import write_mox_files
from tests.unit.realstate import real_state

NAME = "mail.example.com"
OUTCOME_OF_ACTION = {
    "install": "installed",
    "restart": "restarted",
    "repair": "repaired",
    "in sync": "in sync",
    "refuse": "refused",
}


@dataclasses.dataclass
class World:
    """A host in a tmp dir before the case is made: Caddy's current pair (issued a day ago)
    and mox's files holding an older one."""

    ca: Ca
    tmp_path: Path
    mox_ids: tuple[int, int]
    config: Any
    caddys: Issued
    old: Issued

    @classmethod
    def made(cls, ca: Ca, tmp_path: Path, mox_ids: tuple[int, int], config: Any) -> World:
        """The world every case starts from, mox's files holding the older pair."""
        world = cls(
            ca,
            tmp_path,
            mox_ids,
            config,
            caddys=ca.issue([NAME], key=key_of("ec256", 30), not_before=NOW - DAY),
            old=ca.issue([NAME], key=key_of("ec256", 34), not_before=NOW - 40 * DAY),
        )
        world.mox(world.old.cert_pem, world.old.key_pem)
        return world

    @property
    def caddy_dir(self) -> Path:
        return self.tmp_path / "caddy"

    @property
    def cert_dir(self) -> Path:
        return self.tmp_path / "mox" / "certs"

    def caddy(self, cert: bytes | None, key: bytes | None, issuer: str = LETSENCRYPT) -> None:
        write_caddy(self.caddy_dir, issuer, NAME, cert, key)

    def mox(self, cert: bytes | None, key: bytes | None) -> None:
        write_mox_files(self.cert_dir, NAME, cert, key, self.mox_ids)

    def link_folder(self, path: Path) -> None:
        """Put a symlink where certsync expects a folder (its contents moved behind it)."""
        real = self.tmp_path / f"real-{path.name}"
        if path.exists():
            path.rename(real)
        else:
            real.mkdir()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(real)


def _nothing_in_caddy(w: World) -> None:
    pass


def _other_name_only(w: World) -> None:
    other = w.ca.issue(["www.example.com"])
    write_caddy(w.caddy_dir, LETSENCRYPT, "www.example.com", other.cert_pem, other.key_pem)


def _new_key_beside_old_cert(w: World) -> None:
    w.caddy(w.caddys.cert_pem, caddy_key_pem(key_of("ec256", 39)))


def _truncated_crt(w: World) -> None:
    w.caddy(w.caddys.cert_pem[:300], w.caddys.key_pem)


def _empty_key(w: World) -> None:
    w.caddy(w.caddys.cert_pem, b"")


def _issued(**kwargs: Any) -> Callable[[World], None]:
    def make(w: World) -> None:
        issued = w.ca.issue(**{"sans": [NAME], **kwargs})
        w.caddy(issued.cert_pem, issued.key_pem)

    return make


def _untrusted(w: World) -> None:
    (w.tmp_path / "trusted.pem").write_bytes(cert_pem(Ca("another").root))
    w.caddy(w.caddys.cert_pem, w.caddys.key_pem)


def _stale_issuer_folder_vs_protected_mox(w: World) -> None:
    stale = w.ca.issue([NAME], key=key_of("ec256", 31), not_before=NOW - 30 * DAY)
    w.caddy(stale.cert_pem, stale.key_pem, issuer=ZEROSSL)
    current = w.ca.issue([NAME], key=key_of("ec256", 32), not_before=NOW - 2 * HOUR)
    w.mox(current.cert_pem, current.key_pem)
    remember_installed(w.config, NAME, current.cert_pem)


def _placeholder_newer_than_caddys(w: World) -> None:
    w.caddy(w.caddys.cert_pem, w.caddys.key_pem)
    placeholder = self_signed([NAME], NOW - HOUR, NOW + 365 * DAY)
    w.mox(placeholder.cert_pem, placeholder.key_pem)


def _mox_files_link_into_caddys_storage(w: World) -> None:
    stale = w.ca.issue([NAME], key=key_of("ec256", 33), not_before=NOW - 30 * DAY)
    w.caddy(stale.cert_pem, stale.key_pem, issuer=ZEROSSL)
    w.caddy(w.caddys.cert_pem, w.caddys.key_pem)
    stored = w.caddy_dir / "certificates" / ZEROSSL / NAME / NAME
    for suffix in ("crt", "key"):
        (w.cert_dir / f"{NAME}.{suffix}").unlink()
        (w.cert_dir / f"{NAME}.{suffix}").symlink_to(f"{stored}.{suffix}")


def _in_sync(w: World) -> None:
    w.caddy(w.caddys.cert_pem, w.caddys.key_pem)
    w.mox(w.caddys.cert_pem, w.caddys.key_pem)


def _owner_and_mode_drift(w: World) -> None:
    _in_sync(w)
    (w.cert_dir / f"{NAME}.key").chmod(0o644)
    os.chown(w.cert_dir / f"{NAME}.crt", 0, 0)


def _symlinked(folder: str) -> Callable[[World], None]:
    def make(w: World) -> None:
        w.caddy(w.caddys.cert_pem, w.caddys.key_pem)
        w.link_folder(w.tmp_path / folder)

    return make


def _mox_folder_of_roots(w: World) -> None:
    _in_sync(w)
    os.chown(w.cert_dir.parent, *w.mox_ids)  # as /home/mox is
    os.chown(w.cert_dir, 0, 0)


def _mox_folder_of_roots_holding_other_files(w: World) -> None:
    """certsync_mox_cert_dir naming a folder of root's that holds more (/etc/ssl/private)."""
    _in_sync(w)
    os.chown(w.cert_dir.parent, 0, 0)
    os.chown(w.cert_dir, 0, 0)
    (w.cert_dir / "ssl-cert-snakeoil.key").write_text("not mox's\n")


def _mox_folder_of_roots_empty_not_certsync_s(w: World) -> None:
    """certsync_mox_cert_dir naming an empty folder of root's (/etc/ssl/private, /var/tmp)."""
    _in_sync(w)
    shutil.rmtree(w.cert_dir)
    w.cert_dir.mkdir(mode=0o700)
    os.chown(w.cert_dir.parent, 0, 0)


def _mox_folder_left_by_a_crash(owner: str) -> Callable[[World], None]:
    """What a crash leaves between the folder's mkdir (no permission) and its chmod."""

    def make(w: World) -> None:
        _no_mox_folder(w)
        os.chown(w.cert_dir.parent, 0, 0)
        w.cert_dir.mkdir(mode=0o000)
        os.chown(w.cert_dir, *(w.mox_ids if owner == "mox" else (0, 0)))
        w.cert_dir.chmod(0o000)

    return make


def _no_mox_folder(w: World) -> None:
    _in_sync(w)
    shutil.rmtree(w.cert_dir)


TRUSTED_CHAIN = {"require_trusted_chain": True, "trusted_ca_file": "{tmp}/trusted.pem"}

# (case, the plan README's table says, settings ("{tmp}": tmp_path), how the case is made)
CASES: list[tuple[str, str, dict[str, Any], Callable[[World], None]]] = [
    ("no certificate in Caddy", "refuse", {}, _nothing_in_caddy),
    ("no certificate for the name", "refuse", {}, _other_name_only),
    ("mid-renewal: new key, old certificate", "refuse", {}, _new_key_beside_old_cert),
    ("mid-renewal: truncated .crt", "refuse", {}, _truncated_crt),
    ("mid-renewal: empty .key", "refuse", {}, _empty_key),
    ("expired", "refuse", {}, _issued(not_before=NOW - 90 * DAY, not_after=NOW - DAY)),
    ("not yet valid", "refuse", {}, _issued(not_before=NOW + HOUR)),
    ("expiring", "refuse", {}, _issued(not_before=NOW - 89 * DAY, not_after=NOW + 3 * HOUR)),
    ("wrong name", "refuse", {}, _issued(sans=["www.example.com"])),
    ("untrusted chain, required", "refuse", TRUSTED_CHAIN, _untrusted),
    ("stale issuer folder vs current mox", "refuse", {}, _stale_issuer_folder_vs_protected_mox),
    ("placeholder newer than Caddy's", "install", {}, _placeholder_newer_than_caddys),
    ("mox's files link into Caddy", "install", {}, _mox_files_link_into_caddys_storage),
    ("in sync", "in sync", {}, _in_sync),
    ("owner and mode drift", "repair", {}, _owner_and_mode_drift),
    ("symlinked mox folder", "refuse", {}, _symlinked("mox/certs")),
    ("symlinked backup folder", "refuse", {}, _symlinked("backups")),
    ("symlinked log folder", "refuse", {}, _symlinked("log")),
    ("symlinked lock folder", "refuse", {}, _symlinked("run")),
    ("mox folder of root's, not empty", "refuse", {}, _mox_folder_of_roots),
    (
        "mox folder of root's, holding other files",
        "refuse",
        {},
        _mox_folder_of_roots_holding_other_files,
    ),
    (
        "mox folder of root's, empty, not certsync's",
        "refuse",
        {},
        _mox_folder_of_roots_empty_not_certsync_s,
    ),
    ("no mox folder yet", "install", {}, _no_mox_folder),
    (
        "mox folder made, killed before its chown",
        "install",
        {},
        _mox_folder_left_by_a_crash("root"),
    ),
    ("mox folder made, killed before its chmod", "install", {}, _mox_folder_left_by_a_crash("mox")),
    ("backup folder's parent missing", "refuse", {"backup_dir": "{tmp}/lib/backups"}, _in_sync),
    # a first sync on a host: /var/lib/certsync (the lock's folder) holds the backups' folder
    (
        "certsync's folders not there yet",
        "install",
        {"lock_file": "{tmp}/lib/lock", "backup_dir": "{tmp}/lib/backups"},
        lambda w: w.caddy(w.caddys.cert_pem, w.caddys.key_pem),
    ),
]


@pytest.mark.parametrize(
    ("action", "settings", "make"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_sync_does_what_state_planned(
    ca, fake_mox: MakeFakeMox, mox_ids, tmp_path, action, settings, make
):
    mox, config = fake_mox(
        **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in settings.items()}
    )
    world = World.made(ca, tmp_path, mox_ids, config)
    make(world)
    mox.start()
    served_before = mox.served(NAME)

    planned = real_state(config)["names"][NAME]
    (outcome,) = run_sync(config, [NAME], False, Log(config.host, config.log_file))

    assert planned["action"] == action, planned["detail"]
    assert outcome.status == OUTCOME_OF_ACTION[action], outcome.detail
    if action == "install":
        assert mox.restarts == 1 and mox.served(NAME) == planned["caddy"]["cert"]["sha256"]
    else:
        assert outcome.detail == planned["detail"]
        assert mox.restarts == 0 and mox.served(NAME) == served_before
    if outcome.ok:
        after = real_state(config)["names"][NAME]
        assert after["action"] == "in sync", after["detail"]


def test_mox_serving_another_certificate_than_its_files_is_restarted(
    ca, fake_mox: MakeFakeMox, mox_ids, tmp_path
):
    mox, config = fake_mox()
    caddys = ca.issue([NAME], key=key_of("ec256", 35), not_before=NOW - DAY)
    old = ca.issue([NAME], key=key_of("ec256", 36), not_before=NOW - 40 * DAY)
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, caddys.cert_pem, caddys.key_pem)
    write_mox_files(tmp_path / "mox" / "certs", NAME, old.cert_pem, old.key_pem, mox_ids)
    mox.start()
    write_mox_files(tmp_path / "mox" / "certs", NAME, caddys.cert_pem, caddys.key_pem, mox_ids)

    planned = real_state(config)["names"][NAME]
    (outcome,) = run_sync(config, [NAME], False, Log(config.host, config.log_file))

    assert planned["action"] == "restart"
    assert (outcome.status, outcome.detail) == ("restarted", planned["detail"])
    assert mox.restarts == 1 and mox.served(NAME) == caddys.sha256
    assert real_state(config)["names"][NAME]["action"] == "in sync"


@pytest.mark.parametrize("published", [False, True], ids=["record missing", "waiting two TTLs"])
def test_a_key_change_held_for_dane_is_planned_as_the_sync_holds_it(
    ca, fake_mox: MakeFakeMox, mox_ids, tmp_path, monkeypatch, published
):
    from certsync.host import dane
    from tests.unit.test_dane import OWNER, FakeDns, r311

    dns = FakeDns()
    monkeypatch.setattr(dane, "lookup", dns.lookup)
    mox, config = fake_mox(dane="auto")
    caddys = ca.issue([NAME], key=key_of("ec256", 37), not_before=NOW - DAY)
    old = ca.issue([NAME], key=key_of("ec256", 38), not_before=NOW - 40 * DAY)
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, caddys.cert_pem, caddys.key_pem)
    write_mox_files(tmp_path / "mox" / "certs", NAME, old.cert_pem, old.key_pem, mox_ids)
    remember_installed(config, NAME, old.cert_pem)
    dns.records[OWNER] = [r311(old.spki_sha256)] + ([r311(caddys.spki_sha256)] * published)
    mox.start()

    planned = real_state(config)["names"][NAME]
    (outcome,) = run_sync(config, [NAME], False, Log(config.host, config.log_file))

    assert planned["action"] == "held for DANE"
    assert (outcome.status, outcome.detail) == ("held for DANE", planned["detail"])
    assert mox.restarts == 0 and mox.served(NAME) == old.sha256
