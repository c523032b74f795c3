"""WordPress behind forkd: install Debian's `wordpress`, serve it through one `fastcgi` route, walk it.

Run as root: `python3 -m tests.soak.wordpress [--no-apt] [--runs N] [--prefix /blog] [--https]
[--connections N] [--keep] [--hold SECONDS]`. CI walks it once per `connections` setting
(tests/integration/test_wordpress.py).

Theory of operation. The soak installs what is missing with apt-get (Debian's `wordpress`, its
theme, `mariadb-server`, `php-mysql`, `php-gd`, `php-xml`, `php-mbstring`; `php` is named so
that apt picks php-fpm and not libapache2-mod-php; no service is started). Then, all in one
temporary directory:

- a MariaDB of its own (mariadb-install-db, then mariadbd on a unix socket, no TCP), with a
  `wordpress` database and user;
- a copy of /usr/share/wordpress (symlinks dereferenced: a fastcgi route runs only scripts that
  really lie inside its root) with its own wp-config.php, so nothing under /etc is touched and
  wp-content/uploads lies inside the tree. External HTTP is blocked (WP_HTTP_BLOCK_EXTERNAL), so
  the run never waits on wordpress.org; WordPress's loopback requests to itself still happen;
- php-fpm (tests/support/php_fpm.py) with the extensions WordPress needs;
- forkd (tests/support/daemon.py) with ONE route: `fastcgi` with `root:` the tree,
  `index: [index.php]`, `front_controller: /index.php` and `pass_authorization: true` (for
  application passwords).

Then a client with a cookie jar walks what a first-time owner does: the install redirect and form,
the admin login, pretty permalinks, a post fetched by its pretty permalink (the front controller),
a media upload fetched back as a static file (ETag, ranges), a static asset, the upload hole
(`/uploads/x.png/x.php`); then URL shapes WordPress relies on, a chunked REST upload, an
application password, XML-RPC, a comment, keep-alive, wp-cron, log out. `--prefix` puts
WordPress in a subdirectory (the route's prefix); `--https` serves it over TLS. One line per step, PASS or FAIL with its time; exit status 1 on any
failure. Every process started here is stopped in a `finally`, on failure, SIGTERM and Ctrl-C. The
temporary directory is removed unless the run failed or `--keep` is given (its logs say why).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon
from tests.support.php_fpm import PhpFpm
from tests.support.processes import stop_group
from tests.support.tools import debian_package_installed

# php-xml (XML-RPC) and php-mbstring are only Suggests of Debian's wordpress; real sites have them.
# `php` (not libapache2-mod-php) satisfies wordpress's "libapache2-mod-php | php".
PACKAGES = ["wordpress", "wordpress-theme-twentytwentythree", "mariadb-server", "php-mysql",
            "php-gd", "php-xml", "php-mbstring", "php-fpm", "php"]
WORDPRESS = Path("/usr/share/wordpress")
PHP_EXTENSIONS = ["mysqlnd", "mysqli", "gd", "exif", "fileinfo", "iconv", "ctype", "tokenizer",
                  "xml", "dom", "simplexml", "xmlreader", "mbstring", "zend:opcache"]
PHP_VALUES = {"upload_max_filesize": "16M", "post_max_size": "16M", "memory_limit": "256M",
              "max_execution_time": "60", "display_errors": "Off", "log_errors": "On",
              "date.timezone": "UTC", "opcache.enable": "1"}
ADMIN, PASSWORD = "admin", "forkd-soak-" + secrets.token_hex(6)
TITLE, POST_TITLE = "forkd soak", "Hello from forkd"


class StepFailed(Exception):
    pass


def check(condition: object, what: str) -> None:
    if not condition:
        raise StepFailed(what)


# -- apt ------------------------------------------------------------------------------------------
def missing_packages() -> list[str]:
    return [name for name in PACKAGES if not debian_package_installed(name)]


def apt_install(names: list[str]) -> str:
    """Install `names` without starting any service (a policy-rc.d says no while apt runs)."""
    if not names:
        return "all installed"
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:  # mariadb-server's postinst would otherwise start the system's MariaDB
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *names]
    try:
        if subprocess.run(argv, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            check(done.returncode == 0, f"apt-get failed: {done.stderr[-500:]}")
    finally:
        if ours:
            policy.unlink()
    return "installed " + " ".join(names)


# -- MariaDB --------------------------------------------------------------------------------------
class MariaDB:
    """A private mariadbd: its data directory and unix socket in `directory`, no TCP."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.data = directory / "data"
        self.socket = directory / "mysqld.sock"
        self.log = directory / "mysqld.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        done = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--skip-test-db", "--auth-root-authentication-method=normal"],
            capture_output=True, text=True, check=False)
        check(done.returncode == 0, f"mariadb-install-db failed: {done.stderr[-500:]}")
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}",
             "--skip-networking", "--user=root", f"--pid-file={self.dir / 'mysqld.pid'}",
             f"--log-error={self.log}", "--innodb-buffer-pool-size=64M",
             "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.sql("SELECT 1").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise StepFailed(f"mariadbd did not start: {self.tail()}")
            time.sleep(0.1)

    def sql(self, statements: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                               "-e", statements], capture_output=True, text=True, check=False)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1000:] if self.log.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc, signal.SIGTERM, 30.0)  # TERM: mariadbd's clean shutdown


# -- the WordPress tree ---------------------------------------------------------------------------
def make_tree(directory: Path, db_socket: Path, db_password: str) -> Path:
    """Copy Debian's WordPress (symlinks dereferenced) and give it its own wp-config.php."""
    tree = directory / "wordpress"
    shutil.copytree(WORDPRESS, tree, symlinks=False, ignore=shutil.ignore_patterns(".htaccess"))
    keys = "".join(f"define('{name}', '{secrets.token_hex(32)}');\n" for name in (
        "AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY", "AUTH_SALT",
        "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT"))
    (tree / "wp-config.php").write_text(
        "<?php\n"
        "define('DB_NAME', 'wordpress');\n"
        "define('DB_USER', 'wordpress');\n"
        f"define('DB_PASSWORD', '{db_password}');\n"
        f"define('DB_HOST', 'localhost:{db_socket}');\n"
        "define('DB_CHARSET', 'utf8mb4');\n"
        "define('DB_COLLATE', '');\n"
        + keys +
        "$table_prefix = 'wp_';\n"
        "define('WP_HTTP_BLOCK_EXTERNAL', true);  // loopback only: never wait on wordpress.org\n"
        "define('AUTOMATIC_UPDATER_DISABLED', true);\n"
        "define('WP_DEBUG', false);\n"
        "define('WP_ENVIRONMENT_TYPE', 'local');  // application passwords without HTTPS\n"
        "if (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');\n"
        "require_once ABSPATH . 'wp-settings.php';\n"
    )
    return tree


def https_site(directory: Path, tree: Path) -> dict[str, Any]:
    """A test CA and a certificate for `localhost`; WordPress's loopbacks must trust it too.

    A name, not 127.0.0.1: the Requests library in WordPress checks only DNS names against the
    certificate, never IP addresses.
    """
    import trustme  # a test dependency, needed only here

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert, key = directory / "site.pem", directory / "site.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    # The installer's loopback test verifies the certificate. Debian's WordPress reads the system
    # bundle (/etc/ssl/certs): a must-use plugin of the copy names the test CA instead.
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    plugins = tree / "wp-content" / "mu-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "forkd-soak-ca.php").write_text(
        "<?php\nadd_filter('http_request_args', function ($args) {\n"
        f"    $args['sslcertificates'] = '{directory / 'ca.pem'}';\n"
        "    return $args;\n});\n")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return {"host": "localhost", "context": context, "config": {
        "listen": [{"address": "127.0.0.1:0", "tls": True}],
        "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]}}}


def png(width: int = 300, height: int = 200, noise: bool = False) -> bytes:
    """A real RGB PNG (big enough for a 150x150 thumbnail) carrying PHP code in a tEXt chunk.

    If forkd ever handed `/uploads/x.png/x.php` to PHP, the code would run and show its marker.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    if noise:  # incompressible: the file is as big as its pixels
        rows = b"".join(b"\0" + os.urandom(width * 3) for _ in range(height))
    else:
        rows = b"".join(b"\0" + b"".join(bytes((x % 256, y % 256, (x * y) % 256))
                                          for x in range(width)) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"tEXt", b"Comment\0<?php echo 'UPLOAD-EXECUTED'; ?>")
            + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


# -- the client -----------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        return None  # the walk checks every redirect itself


class Client:
    """urllib with a cookie jar; redirects are returned, not followed."""

    def __init__(self, base: str, tls: ssl.SSLContext | None = None) -> None:
        self.base = base
        self.tls = tls
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  urllib.request.HTTPSHandler(context=tls),
                                                  NoRedirect)

    def another(self) -> Client:
        """A new visitor: the same site, no cookies."""
        return Client(self.base, self.tls)

    def connection(self) -> tuple[http.client.HTTPConnection, str]:
        """A persistent connection to the site, and the site's path."""
        base = urllib.parse.urlsplit(self.base)
        if base.scheme == "https":
            return http.client.HTTPSConnection(base.netloc, timeout=60, context=self.tls), base.path
        return http.client.HTTPConnection(base.netloc, timeout=60), base.path

    def request(self, path: str, data: bytes | dict[str, str] | Iterable[bytes] | None = None,
                headers: dict[str, str] | None = None, method: str | None = None) -> Response:
        if isinstance(data, dict):
            data = urllib.parse.urlencode(data).encode()
        url = path if path.startswith("http") else self.base + path
        request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
        try:
            with self.opener.open(request, timeout=60) as reply:
                return Response(reply.status, reply.headers, reply.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())


def nonce(pattern: str, text: str, what: str) -> str:
    found = re.search(pattern, text)
    check(found, f"no {what} in the page")
    assert found is not None
    return found.group(1)


def multipart(fields: dict[str, str], name: str, filename: str, content: bytes,
              content_type: str) -> tuple[bytes, str]:
    boundary = "forkd" + secrets.token_hex(12)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
             .encode() for key, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
                 + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# -- the walk -------------------------------------------------------------------------------------
class Walk:
    def __init__(self, client: Client, db: MariaDB) -> None:
        self.c = client
        self.db = db
        self.post_link = ""
        self.post_id = 0
        self.upload_url = ""
        self.image = png()

    def install_redirect(self) -> str:
        r = self.c.request("/")
        location = r.headers.get("Location", "")
        check(r.status == 302 and location.endswith("/wp-admin/install.php"),
              f"GET / gave {r.status} Location {location!r}")
        return f"GET / -> {r.status} {location}"

    def install(self) -> str:
        form = self.c.request("/wp-admin/install.php")
        check(form.status == 200 and 'name="weblog_title"' in form.text,
              f"install form: {form.status} {form.text[:200]!r}")
        r = self.c.request("/wp-admin/install.php?step=2", {
            "weblog_title": TITLE, "user_name": ADMIN, "admin_password": PASSWORD,
            "admin_password2": PASSWORD, "pw_weak": "on", "admin_email": "admin@example.com",
            "blog_public": "0", "Submit": "Install WordPress", "language": ""})
        check(r.status == 200 and "Success!" in r.text, f"step=2: {r.status} {r.text[-300:]!r}")
        home = self.c.request("/")
        check(home.status == 200 and TITLE in home.text, f"home page after install: {home.status}")
        # wp_install() fetched its sample post through forkd at a date-based pretty permalink
        # and kept that structure only because the answer was right.
        sample = re.search(r'href="[^"]*(/\d{4}/\d\d/\d\d/hello-world/)"', home.text)
        check(sample, "the installer did not enable pretty permalinks (its loopback test failed)")
        assert sample is not None
        return (f"form 200, step=2 'Success!', home page {len(home.body)} bytes, installer's own "
                f"loopback test chose pretty permalinks ({sample.group(1)})")

    def login(self) -> str:
        anonymous = self.c.another().request("/wp-admin/")
        check(anonymous.status == 302 and "wp-login.php" in anonymous.headers.get("Location", ""),
              f"/wp-admin/ without cookies gave {anonymous.status}")
        page = self.c.request("/wp-login.php")
        check(page.status == 200 and 'name="log"' in page.text, f"login page: {page.status}")
        r = self.c.request("/wp-login.php", {
            "log": ADMIN, "pwd": PASSWORD, "wp-submit": "Log In", "testcookie": "1",
            "redirect_to": self.c.base + "/wp-admin/"})
        cookies = r.headers.get_all("Set-Cookie") or []
        check(r.status == 302 and r.headers.get("Location", "").endswith("/wp-admin/"),
              f"login POST gave {r.status} {r.text[:300]!r}")
        check(sum("wordpress_" in c for c in cookies) >= 3, f"auth cookies: {cookies}")
        if self.c.base.startswith("https:"):  # is_ssl(): PHP saw HTTPS=on
            check(any(c.startswith("wordpress_sec_") and "secure" in c.lower() for c in cookies),
                  f"no Secure auth cookie over HTTPS: {cookies}")
        dashboard = self.c.request("/wp-admin/")
        check(dashboard.status == 200 and "Dashboard" in dashboard.text,
              f"dashboard: {dashboard.status}")
        return f"302 with {len(cookies)} Set-Cookie, dashboard 200"

    def permalinks(self) -> str:
        page = self.c.request("/wp-admin/options-permalink.php")
        check(page.status == 200, f"options-permalink.php: {page.status}")
        token = nonce(r'name="_wpnonce" value="([0-9a-f]+)"', page.text, "_wpnonce")
        r = self.c.request("/wp-admin/options-permalink.php", {
            "_wpnonce": token, "_wp_http_referer": "/wp-admin/options-permalink.php",
            "selection": "custom", "permalink_structure": "/%postname%/",
            "category_base": "", "tag_base": "", "submit": "Save Changes"})
        check(r.status == 302 and "settings-updated=true" in r.headers.get("Location", ""),
              f"permalink POST: {r.status} {r.headers.get('Location')}")
        after = self.c.request("/wp-admin/options-permalink.php")
        check('value="/%postname%/"' in after.text, "the structure did not stick")
        return "/%postname%/ saved (nonce form, 302)"

    def post(self) -> str:
        r = self.c.request("/wp-json/wp/v2/posts", json.dumps({
            "title": POST_TITLE, "status": "publish",
            "content": "<p>Served by forkd through php-fpm.</p>"}).encode(),
            {"Content-Type": "application/json", "X-WP-Nonce": self.rest_nonce()})
        check(r.status == 201, f"REST create: {r.status} {r.text[:300]!r}")
        created = json.loads(r.body)
        self.post_link, self.post_id = created["link"], created["id"]
        check(self.post_link == self.c.base + "/hello-from-forkd/", f"link {self.post_link}")
        return f"REST 201, post {created['id']} at {urllib.parse.urlsplit(self.post_link).path}"

    def pretty(self) -> str:
        r = self.c.request(self.post_link)
        check(r.status == 200 and POST_TITLE in r.text and "Served by forkd" in r.text,
              f"permalink: {r.status}")
        bare = self.c.request(self.post_link.rstrip("/") + "?x=1")
        check(bare.status == 301
              and bare.headers.get("Location") == self.post_link + "?x=1",
              f"canonical redirect: {bare.status} {bare.headers.get('Location')}")
        missing = self.c.request("/no-such-page-here/")
        check(missing.status == 404, f"unknown permalink: {missing.status}")
        return "200 through the front controller; /hello-from-forkd?x=1 -> 301; unknown -> 404"

    def urls(self) -> str:
        """The URL shapes WordPress relies on: encoded slugs, query strings, slashes, feeds."""
        r = self.c.request("/wp-json/wp/v2/posts", json.dumps({
            "title": "привет forkd", "status": "publish", "content": "<p>кириллица</p>"}).encode(),
            {"Content-Type": "application/json", "X-WP-Nonce": self.rest_nonce()})
        check(r.status == 201, f"REST create: {r.status} {r.text[:300]!r}")
        post = json.loads(r.body)
        link = post["link"]
        check("/%d0%bf%d1%80%d0%b8%d0%b2%d0%b5%d1%82-forkd/" in link, f"slug {link}")
        page = self.c.request(link)
        check(page.status == 200 and "кириллица" in page.text, f"encoded slug: {page.status}")
        plain = self.c.request(f"/index.php?p={post['id']}")
        check(plain.status == 301 and plain.headers.get("Location") == link,
              f"/index.php?p=: {plain.status} {plain.headers.get('Location')}")
        admin = self.c.request("/wp-admin")
        target = urllib.parse.urljoin(self.c.base + "/wp-admin", admin.headers.get("Location", ""))
        check(admin.status == 301 and target == self.c.base + "/wp-admin/",
              f"/wp-admin: {admin.status} {admin.headers.get('Location')}")
        search = self.c.request("/?s=Hello+from")
        check(search.status == 200 and POST_TITLE in search.text, f"search: {search.status}")
        feed = self.c.request("/feed/")
        check(feed.status == 200 and "rss+xml" in feed.headers.get("Content-Type", "")
              and POST_TITLE in feed.text, f"feed: {feed.status} {feed.headers.get('Content-Type')}")
        api = self.c.request("/wp-json/")
        check(api.status == 200 and json.loads(api.body)["name"] == TITLE, f"/wp-json/: {api.status}")
        head = self.c.request(self.post_link, method="HEAD")
        check(head.status == 200 and not head.body, f"HEAD: {head.status} {len(head.body)}")
        return ("encoded slug 200, /index.php?p= -> 301, /wp-admin -> 301, search, feed, "
                "/wp-json/, HEAD")

    def rest_nonce(self) -> str:
        rest = self.c.request("/wp-admin/admin-ajax.php?action=rest-nonce")
        check(rest.status == 200 and re.fullmatch(rb"[0-9a-f]+", rest.body),
              f"rest-nonce: {rest.status} {rest.body[:100]!r}")
        return rest.text

    def rest_media(self) -> str:
        """A 1.9 MB image through the REST API, sent chunked: forkd de-chunks it for PHP."""
        width = 800
        big = png(width, width, noise=True)
        chunks = [big[i:i + 65536] for i in range(0, len(big), 65536)]
        r = self.c.request("/wp-json/wp/v2/media", iter(chunks), {
            "Content-Type": "image/png", "X-WP-Nonce": self.rest_nonce(),
            "Content-Disposition": 'attachment; filename="forkd-noise.png"'})
        check(r.status == 201, f"REST media: {r.status} {r.text[:300]!r}")
        media = json.loads(r.body)
        sizes = media["media_details"].get("sizes", {})
        check({"thumbnail", "medium"} <= set(sizes), f"sizes: {sorted(sizes)}")
        back = self.c.request(media["source_url"])
        check(back.status == 200 and back.body == big, f"fetch back: {back.status}")
        return (f"{len(big)} bytes chunked -> 201, {len(sizes)} sizes, fetched back identical")

    def app_password(self) -> str:
        """An application password over Basic auth (the route has pass_authorization: true)."""
        r = self.c.request("/wp-json/wp/v2/users/me/application-passwords",
                           json.dumps({"name": "forkd soak"}).encode(),
                           {"Content-Type": "application/json", "X-WP-Nonce": self.rest_nonce()})
        check(r.status == 201, f"create: {r.status} {r.text[:300]!r}")
        secret = json.loads(r.body)["password"]
        token = base64.b64encode(f"{ADMIN}:{secret}".encode()).decode()
        stranger = self.c.another()
        me = stranger.request("/wp-json/wp/v2/users/me?context=edit",
                              headers={"Authorization": f"Basic {token}"})
        check(me.status == 200 and json.loads(me.body).get("username") == ADMIN,
              f"Basic auth: {me.status} {me.text[:200]!r}")
        wrong = base64.b64encode(f"{ADMIN}:wrong".encode()).decode()
        denied = stranger.request("/wp-json/wp/v2/users/me",
                                  headers={"Authorization": f"Basic {wrong}"})
        check(denied.status == 401, f"wrong password: {denied.status}")
        return "created (201); users/me with it 200, with a wrong one 401"

    def xmlrpc(self) -> str:
        """XML-RPC, the older API (pingbacks, old clients): a text/xml POST to xmlrpc.php."""
        def call(method: str, *params: str) -> Response:
            values = "".join(f"<param><value><string>{value}</string></value></param>"
                             for value in params)
            body = (f'<?xml version="1.0"?><methodCall><methodName>{method}</methodName>'
                    f"<params>{values}</params></methodCall>").encode()
            return self.c.another().request("/xmlrpc.php", body, {"Content-Type": "text/xml"})
        hello = call("demo.sayHello")
        check(hello.status == 200 and "<string>Hello!</string>" in hello.text,
              f"demo.sayHello: {hello.status} {hello.text[:300]!r}")
        blogs = call("wp.getUsersBlogs", ADMIN, PASSWORD)
        check(blogs.status == 200 and f"<string>{TITLE}</string>" in blogs.text,
              f"wp.getUsersBlogs: {blogs.status} {blogs.text[:300]!r}")
        return "demo.sayHello, wp.getUsersBlogs with the admin's password"

    def comment(self) -> str:
        """An anonymous comment: a 302 back to the post, the author remembered in cookies."""
        visitor = self.c.another()
        r = visitor.request("/wp-comments-post.php", {
            "comment": "A comment through forkd.", "author": "Visitor",
            "email": "visitor@example.com", "url": "", "comment_post_ID": str(self.post_id),
            "comment_parent": "0", "wp-comment-cookies-consent": "yes", "submit": "Post Comment"})
        location = r.headers.get("Location", "")
        check(r.status == 302 and location.startswith(self.post_link + "#comment-"),
              f"comment: {r.status} {location} {r.text[:200]!r}")
        names = {cookie.name for cookie in visitor.jar}
        check(any(name.startswith("comment_author_") for name in names), f"cookies: {names}")
        shown = visitor.request(self.post_link)
        check(shown.status == 200 and "A comment through forkd." in shown.text, "comment not shown")
        return f"302 to {urllib.parse.urlsplit(location).path}#{location.split('#')[1]}, shown"

    def keep_alive(self) -> str:
        """Mixed PHP and static responses, one after another on one connection.

        The feed's 304 comes from PHP (WordPress checks the feed's ETag itself): it must reach
        the client without a body, or the next response on the connection would be garbled.
        """
        conn, site = self.c.connection()
        expected = (WORDPRESS / "wp-includes/css/buttons.min.css").read_bytes()
        etag = self.c.request("/feed/").headers.get("ETag", "")
        check(etag, "the feed has no ETag")
        rounds = 10
        requests: tuple[tuple[str, str, dict[str, str], int], ...] = (
            ("GET", "/", {}, 200),
            ("GET", "/wp-includes/css/buttons.min.css", {}, 200),
            ("GET", "/feed/", {"If-None-Match": etag}, 304),
            ("GET", "/no-such-page-here/", {}, 404),
            ("HEAD", "/hello-from-forkd/", {}, 200),
            ("GET", "/wp-json/wp/v2/posts?per_page=1", {}, 200))
        try:
            for _ in range(rounds):
                for method, path, headers, status in requests:
                    conn.request(method, site + path, headers=headers)
                    r = conn.getresponse()
                    body = r.read()
                    check(r.status == status and not r.will_close,
                          f"{method} {path}: {r.status}, will_close={r.will_close}")
                    if path.endswith(".css"):
                        check(body == expected, "static body differs on a kept-alive connection")
                    if status == 304:
                        check(body == b"", "a 304 with a body")
        finally:
            conn.close()
        return (f"{rounds * len(requests)} requests (PHP pages, static, PHP's 304, 404, HEAD, "
                "JSON) on one connection")

    def cron(self) -> str:
        """WordPress runs its cron by a POST to itself that it leaves at once (0.01 s timeout).

        forkd logs those 499; the script must still run. wp_install() scheduled
        wp_https_detection (twice daily) for the moment of the install: if a cron run took it,
        it is now due in about 12 hours.
        """
        done = self.db.sql("SELECT option_value FROM wordpress.wp_options "
                           "WHERE option_name = 'cron'")
        check(done.returncode == 0, done.stderr)
        # PHP-serialized {timestamp: {hook: ...}}: split it at the timestamps.
        parts = re.split(r"i:(\d{10});a:\d+:\{", done.stdout)
        due = [int(stamp) for stamp, events in zip(parts[1::2], parts[2::2], strict=True)
               if '"wp_https_detection"' in events]
        check(due, f"wp_https_detection not scheduled: {done.stdout[:300]!r}")
        ahead = due[0] - time.time()
        check(ahead > 3600, f"wp_https_detection still due ({ahead:.0f} s): cron never ran")
        return f"wp_https_detection ran, next due in {ahead / 3600:.1f} h"

    def logout(self) -> str:
        page = self.c.request("/wp-admin/")
        token = nonce(r"wp-login\.php\?action=logout(?:&amp;|&#038;)_wpnonce=([0-9a-f]+)", page.text,
                      "logout link")
        r = self.c.request(f"/wp-login.php?action=logout&_wpnonce={token}")
        check(r.status == 302 and "loggedout=true" in r.headers.get("Location", ""),
              f"logout: {r.status} {r.headers.get('Location')}")
        after = self.c.request("/wp-admin/")
        check(after.status == 302, f"/wp-admin/ after logout: {after.status}")
        return "302 to loggedout=true, cookies cleared: /wp-admin/ -> 302"

    def upload(self) -> str:
        page = self.c.request("/wp-admin/media-new.php")
        check(page.status == 200, f"media-new.php: {page.status}")
        token = nonce(r'"_wpnonce":"([0-9a-f]+)"', page.text, "media-form nonce")
        body, content_type = multipart(
            {"name": "forkd-soak.png", "action": "upload-attachment", "_wpnonce": token},
            "async-upload", "forkd-soak.png", self.image, "image/png")
        r = self.c.request("/wp-admin/async-upload.php", body, {"Content-Type": content_type})
        check(r.status == 200, f"async-upload: {r.status} {r.text[:300]!r}")
        answer = json.loads(r.body)
        check(answer.get("success"), f"async-upload: {r.text[:300]!r}")
        self.upload_url = answer["data"]["url"]
        sizes = answer["data"].get("sizes", {})
        check("thumbnail" in sizes, f"no thumbnail made (gd?): {sorted(sizes)}")
        return f"{len(self.image)} bytes -> {urllib.parse.urlsplit(self.upload_url).path}"

    def fetch_upload(self) -> str:
        r = self.c.request(self.upload_url)
        etag = r.headers.get("ETag")
        check(r.status == 200 and r.body == self.image, f"upload fetch: {r.status}")
        check(etag and r.headers.get("Content-Type") == "image/png",
              f"static headers: {dict(r.headers)}")
        check("X-Powered-By" not in r.headers, "PHP answered for a static file")
        part = self.c.request(self.upload_url, headers={"Range": "bytes=8-107"})
        check(part.status == 206 and part.body == self.image[8:108]
              and part.headers.get("Content-Range") == f"bytes 8-107/{len(self.image)}",
              f"range: {part.status} {part.headers.get('Content-Range')}")
        same = self.c.request(self.upload_url, headers={"If-None-Match": str(etag)})
        check(same.status == 304, f"If-None-Match: {same.status}")
        thumb = self.c.request(self.upload_url.replace(".png", "-150x150.png"))
        check(thumb.status == 200 and thumb.body.startswith(b"\x89PNG"), f"thumb {thumb.status}")
        return f"byte-identical, ETag {etag}, Range 206, 304, thumbnail 200"

    def static_asset(self) -> str:
        r = self.c.request("/wp-includes/css/dashicons.min.css")
        expected = (WORDPRESS / "wp-includes/css/dashicons.min.css").read_bytes()
        check(r.status == 200 and r.body == expected, f"dashicons.min.css: {r.status}")
        check(r.headers.get("ETag") and "X-Powered-By" not in r.headers
              and r.headers.get("Content-Type", "").startswith("text/css"),
              f"headers: {dict(r.headers)}")
        return f"{len(r.body)} bytes, ETag {r.headers.get('ETag')}, {r.headers['Content-Type']}"

    def upload_hole(self) -> str:
        for probe in ("/x.php", "/", "%0a.php"):
            r = self.c.request(self.upload_url + probe)
            check(b"UPLOAD-EXECUTED" not in r.body, f"x.png{probe} ran the upload as PHP")
            check(r.status in (400, 404), f"x.png{probe}: {r.status}")
        source = self.c.request("/wp-config.php")
        check(b"DB_PASSWORD" not in source.body, "wp-config.php source served")
        return "x.png/x.php -> 404, x.png%0a.php -> 400/404, wp-config.php source never served"


# -- the run --------------------------------------------------------------------------------------
FAILURES = (StepFailed, OSError, ValueError, KeyError, TypeError, AssertionError, RuntimeError,
            http.client.HTTPException)


def step(name: str, action: Callable[[], str], failures: list[str]) -> bool:
    started = time.monotonic()
    try:
        detail = action()
        ok = True
    except FAILURES as error:
        detail = f"{type(error).__name__}: {error}"
        ok = False
        failures.append(name)
    print(f"{'PASS' if ok else 'FAIL'} {time.monotonic() - started:6.2f}s  {name}: {detail}",
          flush=True)
    return ok


def php_messages(log: str) -> list[str]:
    return [line for line in log.splitlines() if "PHP " in line]


def access_summary(path: Path) -> str:
    """Requests by status, and those WordPress made to itself (loopbacks, cron)."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    statuses: dict[str, int] = {}
    for line in lines:
        found = re.search(r'" (\d{3}) ', line)
        status = found.group(1) if found else "?"
        statuses[status] = statuses.get(status, 0) + 1
    loopbacks = sum('"WordPress/' in line for line in lines)
    unparsed = sum('] "-" 400 ' in line for line in lines)
    counts = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    probes = (f"; {unparsed} not HTTP (WordPress's TLS probe of its own http:// port) answered 400"
              if unparsed else "")
    return f"{len(lines)} requests ({counts}); {loopbacks} from WordPress to itself{probes}"


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    failures: list[str] = []
    if not args.no_apt and not step("apt", lambda: apt_install(missing_packages()), failures):
        return 1
    apt_seconds = time.monotonic() - began
    walk_began = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="forkd-wp-"))
    db, fpm, daemon = MariaDB(directory), None, None
    db_password = secrets.token_hex(12)
    site: dict[str, Any] = {}
    scheme = "https" if args.https else "http"
    try:
        def database() -> str:
            db.start()
            done = db.sql(f"CREATE DATABASE wordpress; CREATE USER 'wordpress'@'localhost' "
                          f"IDENTIFIED BY '{db_password}'; GRANT ALL ON wordpress.* TO "
                          f"'wordpress'@'localhost';")
            check(done.returncode == 0, done.stderr)
            return f"mariadbd on {db.socket}"

        def servers() -> str:
            nonlocal fpm, daemon
            tree = make_tree(directory, db.socket, db_password)
            if args.https:
                site.update(https_site(directory, tree))
            fpm = PhpFpm(directory / "fpm", children=4, admin_values=PHP_VALUES,
                         extensions=PHP_EXTENSIONS).start()
            daemon = Daemon(directory, {**site.get("config", {}),
                                        "routes": [{"prefix": args.prefix, "fastcgi": {
                "connect": fpm.connect, "root": str(tree), "index": ["index.php"],
                "front_controller": "/index.php", "pass_authorization": True,
                "connections": args.connections}}]}).start()
            host = site.get("host", "127.0.0.1")
            site["url"] = f"{scheme}://{host}:{daemon.port}{args.prefix.rstrip('/')}"
            return f"php-fpm and forkd on {site['url']}/"

        ok = step("mariadb", database, failures) and step("php-fpm + forkd", servers, failures)
        if ok:
            assert daemon is not None
            walk = Walk(Client(site["url"], site.get("context")), db)
            for name, action in (
                    ("GET / redirects to the installer", walk.install_redirect),
                    ("install form", walk.install),
                    ("admin login", walk.login),
                    ("pretty permalinks", walk.permalinks),
                    ("publish a post (REST, wp_rest nonce)", walk.post),
                    ("post by its pretty permalink", walk.pretty),
                    ("media upload (async-upload.php)", walk.upload),
                    ("uploaded file served static", walk.fetch_upload),
                    ("static asset", walk.static_asset),
                    ("upload hole", walk.upload_hole),
                    ("WordPress URL shapes", walk.urls),
                    ("REST media upload, chunked", walk.rest_media),
                    ("application password (Basic auth)", walk.app_password),
                    ("XML-RPC", walk.xmlrpc),
                    ("comment (wp-comments-post.php)", walk.comment),
                    ("keep-alive", walk.keep_alive),
                    ("wp-cron ran through its loopback POST", walk.cron),
                    ("log out", walk.logout)):
                if not step(name, action, failures):
                    break
            if args.hold:
                print(f"holding {site['url']}/ (admin / {PASSWORD}) for "
                      f"{args.hold} s; Ctrl-C ends it", flush=True)
                time.sleep(args.hold)
    except (KeyboardInterrupt, SystemExit):
        print(f"FAIL: interrupted; kept {directory}", flush=True)
        raise
    finally:
        if daemon is not None:
            def stop_forkd() -> str:
                assert daemon is not None
                daemon.stop()  # raises if forkd logged a traceback
                return "clean"
            step("forkd stopped, no traceback logged", stop_forkd, failures)
            print(f"note: access log: {access_summary(daemon.access_log)}", flush=True)
            messages = php_messages(daemon.log())
            print(f"note: {len(messages)} PHP message(s) in forkd's error log", flush=True)
            for line in messages[:args.show]:
                print("  " + line[:300], flush=True)
        if fpm is not None:
            fpm.stop()
        db.stop()
    walk_seconds = time.monotonic() - walk_began
    print(f"{'FAIL' if failures else 'PASS'}: walk {walk_seconds:.1f}s after apt, "
          f"{time.monotonic() - began:.1f}s with apt ({apt_seconds:.1f}s)", flush=True)
    if failures or args.keep:
        print(f"kept {directory} (logs: error.log, fpm/, mysqld.log)", flush=True)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.soak.wordpress",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--no-apt", action="store_true", help="skip the apt-get step")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--runs", type=int, default=1, help="walk this many times, from scratch")
    parser.add_argument("--prefix", default="/",
                        help="the route's prefix: WordPress in a subdirectory, e.g. /blog")
    parser.add_argument("--https", action="store_true",
                        help="serve over TLS (a test CA that WordPress's own bundle trusts too)")
    parser.add_argument("--hold", type=int, default=0, metavar="SECONDS",
                        help="keep the site running this long after the walk, to explore it")
    parser.add_argument("--show", type=int, default=5, help="PHP log lines to print")
    parser.add_argument("--connections", type=int, default=0, metavar="N",
                        help="fastcgi.connections: kept php-fpm connections per worker")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: apt-get, and mariadbd/php-fpm as root in a private directory")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally blocks run
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with `&`
    status = 0
    try:
        for number in range(args.runs):
            if args.runs > 1:
                print(f"-- run {number + 1} of {args.runs}", flush=True)
            status |= run(args)
            args.no_apt = True
    except KeyboardInterrupt:
        return 130  # everything started was stopped on the way out (run's finally)
    return status


if __name__ == "__main__":
    sys.exit(main())
