"""A small multi-file PHP application behind a fastcgi route, walked like a visitor and an editor.

The blog in tests/fastcgi/blog has a front controller (pretty URLs: /blog/post/SLUG/), included
library files, a stylesheet, comments posted through a form, a login that sets a signed cookie, an
admin page behind it and an image upload. It stands in for the WordPress walk of issue 17 (see the
README): the same mechanisms, without a database server.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.daemon import ROOT, Daemon
from tests.support.php_fpm import PhpFpm

BLOG = ROOT / "tests" / "fastcgi" / "blog"


@pytest.fixture(scope="module")
def blog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    directory = tmp_path_factory.mktemp("blog")
    root = directory / "blog"
    shutil.copytree(BLOG, root)
    (directory / "data").mkdir()
    fpm = PhpFpm(directory / "fpm", children=2).start()
    (directory / "forkd").mkdir()
    daemon = Daemon(directory / "forkd", {"routes": [
        {"prefix": "/blog/", "fastcgi": {
            "connect": fpm.connect, "root": str(root), "front_controller": "/index.php",
            "params": {"DATA_DIR": str(directory / "data"), "APP_SECRET": "s3cret"}}}]})
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        fpm.stop()


def request(daemon: Daemon, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = daemon.connection()
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.read()  # kept on the response object
    conn.close()
    return response


def text(daemon: Daemon, path: str, **kwargs: object) -> tuple[int, str]:
    status, _, body = daemon.get(path, **kwargs)  # type: ignore[arg-type]
    return status, body.decode()


def test_pretty_urls_and_assets(blog: Daemon) -> None:
    status, page = text(blog, "/blog/")
    assert status == 200 and '<a href="/blog/post/hello-world/">Hello, world</a>' in page
    status, page = text(blog, "/blog/post/hello-world/")
    assert status == 200 and "<article>The first post.</article>" in page
    status, page = text(blog, "/blog/post/no-such-post/")
    assert status == 404 and "No such page: /post/no-such-post/" in page  # the app's own 404
    status, headers, body = blog.get("/blog/assets/site.css")
    assert status == 200 and body == b"body { font-family: serif; }\n" and "etag" in headers


def test_a_comment_is_posted_through_the_form(blog: Daemon) -> None:
    comment = f"nice post {uuid.uuid4().hex}"
    response = request(blog, "POST", "/blog/post/second/", body=f"comment={comment}".encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 303 and response.getheader("Location") == "/blog/post/second/"
    status, page = text(blog, "/blog/post/second/")
    assert status == 200 and f'<p class="comment">{comment}</p>' in page


def test_login_admin_and_upload(blog: Daemon) -> None:
    response = request(blog, "GET", "/blog/admin/")
    assert response.status == 302 and response.getheader("Location") == "/blog/login"
    response = request(blog, "POST", "/blog/login", body=b"user=admin&password=wrong",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 200 and response.getheader("Set-Cookie") is None
    response = request(blog, "POST", "/blog/login", body=b"user=admin&password=correct+horse",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 302 and response.getheader("Location") == "/blog/admin/"
    cookie = response.getheader("Set-Cookie", "").split(";", 1)[0]
    assert cookie.startswith("who=admin")
    status, page = text(blog, "/blog/admin/", headers={"Cookie": cookie})
    assert status == 200 and "Hello, admin" in page

    image = b"\xff\xd8\xff\xe0 not really a jpeg <?php echo 'EXECUTED'; ?>"
    boundary = "forkdboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; "
            f"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    body += image + f"\r\n--{boundary}--\r\n".encode()
    response = request(blog, "POST", "/blog/admin/", body=body, headers={
        "Cookie": cookie, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status == 303 and response.getheader("Location") == "/blog/uploads/photo.jpg"
    status, headers, data = blog.get("/blog/uploads/photo.jpg")
    assert status == 200 and data == image and headers["content-type"] == "image/jpeg"
    status, _, data = blog.get("/blog/uploads/photo.jpg/evil.php")  # the upload never runs
    assert status == 404 and b"EXECUTED" not in data


def test_the_demo_sites_php_page(tmp_path: Path) -> None:
    """conf/site.yaml's /php/ route, pointed at a php-fpm of the test's own."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("forkd.pid*", "*.sqlite3"))
    fpm = PhpFpm(tmp_path / "fpm", children=1).start()
    site = conf / "site.yaml"
    text = site.read_text().replace('"127.0.0.1:8080"', '"127.0.0.1:0"')
    site.write_text(text.replace("unix:/run/php/php8.2-fpm.sock", fpm.connect))
    # The daemon's own config sits in the copy, so every relative path of the demo resolves there.
    daemon = Daemon(conf, site.read_text().replace("pidfile: forkd.pid", "pidfile: null"))
    try:
        daemon.start()
        status, _, body = daemon.get("/php/")
        assert status == 200 and b"Hello from php-fpm 8." in body
        status, _, body = daemon.get("/php/any/pretty/path", method="POST", body=b"name=Ada",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and b"Hello, Ada!" in body and b"/php/any/pretty/path" in body
        assert daemon.get("/php/style.css")[0] == 200
        assert b'href="/php/"' in daemon.get("/")[2]
    finally:
        daemon.stop()
        fpm.stop()


def test_https_is_on_over_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "site.pem", tmp_path / "site.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    fpm = PhpFpm(tmp_path / "fpm", children=1).start()
    (tmp_path / "forkd").mkdir()
    daemon = Daemon(tmp_path / "forkd", {
        "listen": [{"address": "127.0.0.1:0", "tls": True}, "127.0.0.1:0"],
        "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]},
        "routes": [{"prefix": "/", "fastcgi": {"connect": fpm.connect,
                                               "root": str(ROOT / "tests" / "fastcgi" / "app")}}]})
    try:
        daemon.start()
        context = ssl.create_default_context()
        ca.configure_trust(context)
        conn = http.client.HTTPSConnection("127.0.0.1", daemon.port, context=context, timeout=10)
        conn.request("GET", "/env.php")
        env = json.loads(conn.getresponse().read())["server"]
        conn.close()
        assert env["HTTPS"] == "on" and env["REQUEST_SCHEME"] == "https"
        assert env["SSL_PROTOCOL"].startswith("TLSv1.")
        plain_port = int(daemon.addresses[1].rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10)
        conn.request("GET", "/env.php")
        env = json.loads(conn.getresponse().read())["server"]
        conn.close()
        assert "HTTPS" not in env and env["REQUEST_SCHEME"] == "http"
    finally:
        daemon.stop()
        fpm.stop()
