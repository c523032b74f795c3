"""The master and TLS: contexts built per generation, certificates re-read on reload.

Until the worker serves TLS listeners (issue 11, the worker side), these tests check the master's
half: `--check` and `-s reload` judge the certificate files, a broken pair keeps the old generation
serving, and `master.tls_contexts` gives each TLS listener its context.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from forkd import listeners, master, tls
from forkd.config import load
from tests.support.daemon import Daemon
from tests.support.daemon import run_forkd as forkd

MakeDaemon = Callable[..., Daemon]




def write_pair(leaf: trustme.LeafCert, directory: Path, name: str = "site") -> None:
    (directory / f"{name}.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello")
    write_pair(trustme.CA().issue_cert("example.com"), tmp_path)
    return tmp_path


def tls_config(site: Path) -> dict[str, object]:
    return {
        "listen": ["127.0.0.1:0", {"address": "127.0.0.2:0", "tls": True}],
        "tls": {"certificates": [{"cert": str(site / "site.pem"), "key": str(site / "site.key")}]},
        "routes": [{"prefix": "/", "static": {"root": str(site / "www")}}],
    }


def test_check_names_the_key_that_does_not_match(make_daemon: MakeDaemon, site: Path) -> None:
    daemon = make_daemon(tls_config(site), start=False)
    assert forkd("-c", str(daemon.config_path), "--check").returncode == 0
    write_pair(trustme.CA().issue_cert("example.com"), site, "other")
    os.replace(site / "other.key", site / "site.key")
    result = forkd("-c", str(daemon.config_path), "--check")
    assert result.returncode == 1
    assert "tls.certificates[0].key: does not match tls.certificates[0].cert" in result.stdout + (
        result.stderr
    )


def test_reload_rereads_certificates_and_rejects_a_broken_pair(
    make_daemon: MakeDaemon, site: Path
) -> None:
    daemon = make_daemon(tls_config(site))
    config = str(daemon.config_path)
    good_key = (site / "site.key").read_bytes()

    # A renewed certificate (new key too) is accepted: a new generation.
    write_pair(trustme.CA().issue_cert("example.com"), site)
    result = forkd("-c", config, "-s", "reload")
    assert result.returncode == 0, result.stderr
    assert "generation 2 is serving" in result.stdout
    good_key = (site / "site.key").read_bytes()

    # A key that is not the certificate's: rejected, naming the files; generation 2 serves on.
    write_pair(trustme.CA().issue_cert("example.com"), site, "other")
    os.replace(site / "other.key", site / "site.key")
    result = forkd("-c", config, "-s", "reload")
    assert result.returncode == 1
    assert "tls.certificates[0].key: does not match tls.certificates[0].cert" in result.stderr
    assert str(site / "site.key") in result.stderr
    (site / "site.key").write_bytes(good_key)

    # An expired certificate, then a missing key: rejected the same way.
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    expired = trustme.CA().issue_cert(
        "example.com", not_before=past - datetime.timedelta(days=90), not_after=past
    )
    write_pair(expired, site, "expired")
    os.replace(site / "expired.pem", site / "site.pem")
    os.replace(site / "expired.key", site / "site.key")
    result = forkd("-c", config, "-s", "reload")
    assert result.returncode == 1
    assert "tls.certificates[0].cert: expired on " in result.stderr
    assert str(site / "site.pem") in result.stderr
    os.unlink(site / "site.key")
    result = forkd("-c", config, "-s", "reload")
    assert result.returncode == 1
    assert f"tls.certificates[0].key: no such file: {site / 'site.key'}" in result.stderr

    assert daemon.get("/")[::2] == (200, b"hello")
    assert "ready: generation 3" not in daemon.log()


def test_each_tls_listener_gets_the_context(site: Path) -> None:
    config_path = site / "forkd.yaml"
    config_path.write_text(
        "listen: ['127.0.0.1:0', {address: '127.0.0.1:0', tls: true},"
        " {address: '[::1]:0', tls: true}]\n"
        "tls: {certificates: [{cert: site.pem, key: site.key}]}\n"
        "routes: [{prefix: /, static: {root: www}}]\n"
    )
    config = load(config_path)
    bound = []
    try:
        for address in config.listen:
            try:
                bound.append(listeners.bind(address, 16, 0o666))
            except listeners.ListenError:
                pytest.skip("no IPv6 loopback")
        contexts = master.tls_contexts(config, bound)
        _plain, first, second = (listener.sock.fileno() for listener in bound)
        assert set(contexts) == {first, second} and contexts[first] is contexts[second]
        assert isinstance(contexts[first], ssl.SSLContext)

        # The files changed after the config was read (a renewal racing the reload): the master
        # re-reads them when it builds the contexts and refuses, naming the file.
        write_pair(trustme.CA().issue_cert("example.com"), site, "other")
        os.replace(site / "other.key", site / "site.key")
        with pytest.raises(tls.TlsError) as caught:
            master.tls_contexts(config, bound)
        assert str(caught.value) == f"{site / 'site.key'} does not match {site / 'site.pem'}"
    finally:
        for listener in bound:
            listener.close()
