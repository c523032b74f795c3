"""The static-file handler: maps a request path under a route's root to a file and answers for it.

Theory of operation
-------------------
1. **Path → file name.** The encoded request path is decoded once and cleaned of dot-segments by
   `paths.normalize` (a path climbing above "/" is a 400), the route prefix is stripped on whole
   segments (decoding may have moved the path out of the route: 404), dotfiles are refused unless the
   route allows them (/.well-known/ always passes, RFC 8615). The result is joined under the root; it
   cannot name anything outside it except through a symlink.
2. **File name → validated file.** A name is stat()ed first and only regular files and directories go
   further (a FIFO or a device is never opened for serving). It is then opened with O_NONBLOCK (a FIFO
   swapped in meanwhile cannot block the worker) and everything is read from fstat() of that descriptor:
   type, size, times, and — unless `symlinks_outside_root` — where it really is, through
   /proc/self/fd, which names the opened file itself, so a symlink swapped between a check and the open
   cannot smuggle a file from outside the root. The facts are kept in `_File`.
3. **Cache.** `_File`s are cached per file name, and cleaned request paths per raw path. Every request
   still stat()s the name (one cheap syscall) and uses the cached facts only while (device, inode, size,
   mtime_ns) are unchanged and the full validation is less than RECHECK seconds old; a change in any of
   them, or an edit that keeps them but is older than RECHECK, validates afresh. Files up to
   SMALL_FILE bytes keep their content, so the 1 KiB hot path is a dict lookup, a stat and a Response
   of bytes (one send for head and body). Larger files are opened per request; if the opened file is
   not the one described (identity differs), that descriptor is validated and described instead: the
   headers always describe the bytes sent. Every cache is a `bounded.ByteCache` with a budget in
   bytes (FILE_BYTES, TARGET_BYTES, MISSING_BYTES; listings: `listing.CACHE_BYTES`), oldest out
   first. Only names that exist are cached as targets and files; a path found missing is kept in
   the small MISSING_BYTES cache alone, so a repeated 404 stays quick (about 40 % more requests per
   second than without it) while a flood of distinct missing paths only pushes older ones out.
4. **Answer.** Preconditions (RFC 9110 §13.2.2), then Range (§14), then the body: bytes, or FileRange
   parts over the descriptor (the worker sends them with os.sendfile and `cleanup` closes the fd). The
   FileRange counts come from the same fstat as Content-Length: if the file shrinks mid-send the worker
   finds EOF early and must cut the connection, never pad.
5. **Listings** are opened as directories, checked like any file and read through that descriptor
   by `listing.Listings` (capped, cached by directory identity).
Precompressed siblings (FILE.br, FILE.gz) are separate representations of FILE with their own
validators (the ETag carries the coding); every response for a file that has one says
`Vary: Accept-Encoding`.
"""

from __future__ import annotations

import errno
import html
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from forkd.config import StaticConfig
from forkd.handlers import autoindex, compress, conditional, mime, negotiate
from forkd.handlers.base import HandlerContext
from forkd.handlers.bounded import ByteCache, cost_of
from forkd.handlers.listing import Listings
from forkd.handlers.paths import hidden, normalize, strip_prefix, within
from forkd.http.errors import (
    Forbidden,
    HTTPError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    ServiceUnavailable,
)
from forkd.http.request import Request
from forkd.http.response import FileRange, Response, error_body

ALLOW = "GET, HEAD, OPTIONS"
SMALL_FILE = 64 * 1024  # files up to this size are kept in memory while unchanged
FILE_BYTES = 32 * 1024 * 1024  # files' facts and small contents kept per route and worker
TARGET_BYTES = 4 * 1024 * 1024  # cleaned request paths kept per route and worker
MISSING_BYTES = 1024 * 1024  # request paths last found missing (the quick 404), per route and worker
RECHECK = 1.0  # seconds a validation is trusted while the file's identity is unchanged
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
DIRECTORY_FLAGS = OPEN_FLAGS | os.O_DIRECTORY  # a listing: whatever is opened must be a directory
SIBLINGS = (("br", ".br"), ("gzip", ".gz"))  # content coding, file suffix (best first)
NOT_FOUND_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.ENXIO})
DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
# Out of descriptors or memory: an overload that passes, not a server bug (RFC 9110 §15.6.4).
OVERLOAD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


@dataclass(slots=True)
class _Target:
    """A cleaned request path: the decoded URL path and the file name it maps to."""

    url_path: str  # decoded, normalised, the whole path ("/static/a b/")
    rest: str  # the part below the route prefix ("/a b/")
    fs_path: str  # root + rest, without the trailing slash
    trailing: bool  # the request path ended with "/"


@dataclass(slots=True)
class _File:
    """Validated facts about one regular file or directory (one representation of a file)."""

    fs_path: str
    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns
    is_dir: bool
    checked: float  # time.monotonic() of the validation
    coding: str = ""  # "" for the file itself, "br" / "gzip" for a precompressed sibling
    size: int = 0
    mtime: int = 0  # Last-Modified, whole seconds
    etag: str = ""
    content_type: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # a 200's fields
    not_modified: list[tuple[str, str]] = field(default_factory=list)  # a 304's fields
    data: bytes | None = None  # the content, for small files
    siblings: tuple[str, ...] = ()  # codings with a precompressed sibling file
    compressible: bool = False  # gzip on the fly may send it (forkd.handlers.compress)


class StaticHandler:
    """Serves files below `config.root` for the route at `prefix`."""

    def __init__(self, prefix: str, config: StaticConfig, context: HandlerContext) -> None:
        self.prefix = prefix
        self.config = config
        self.root = str(config.root).rstrip("/") or "/"
        self.root_real = os.path.realpath(self.root)
        # Index names are file names: one with a "/" or a dot-segment could leave the directory.
        self.index = tuple(name for name in config.index if name not in ("", ".", "..") and "/" not in name)
        success = [("Cache-Control", config.cache_control)] if config.cache_control else []
        success += [(name, value) for name, value in config.headers.items()]
        self.success_headers = success  # on 2xx and 304 answers
        # The body of a plain 404, the very page the worker makes of NotFound(); None when the route
        # has its own 404 page (then every 404 takes the general path).
        self.not_found = None if 404 in config.error_pages or config.fallback else error_body(404)
        # Issue 12: gzip on the fly, and the SPA fallback (see _fallback).
        self.gzip = compress.Gzip(success) if config.gzip else None
        # Every cache is bounded in bytes. Targets and files hold only names that exist; paths
        # found missing get a small cache of their own, so a flood of distinct missing paths can
        # only push older ones out of it.
        self._targets: ByteCache[str, _Target] = ByteCache(TARGET_BYTES)
        self._files: ByteCache[str, _File] = ByteCache(FILE_BYTES)
        self._missing: ByteCache[str, str] = ByteCache(MISSING_BYTES)  # raw path -> file name
        self._listings = Listings(self.root_real, config.dotfiles, config.symlinks_outside_root)
        # A listing has no validator and changes with every file below it, so unless the route
        # says otherwise caches must revalidate it rather than guess a lifetime (RFC 9111 §4.2.2).
        revalidate = [] if config.cache_control else [("Cache-Control", "no-cache")]
        self._listing_headers = {
            as_json: [("Content-Type", content_type), ("Vary", "Accept"), *revalidate, *success]
            for as_json, content_type in ((False, "text/html; charset=utf-8"),
                                          (True, "application/json; charset=utf-8"))}

    # -- the Handler interface ------------------------------------------------------------------

    def prepare(self, request: Request) -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            raise MethodNotAllowed(ALLOW)

    def handle(self, request: Request) -> Response:
        try:
            return self._fast(request) or self._serve(request)
        except HTTPError as error:
            if error.status == 404 and self.config.fallback:
                fallback = self._fallback(request)
                if fallback is not None:
                    return fallback
            page = self.config.error_pages.get(error.status)
            response = self._error_page(page, error) if page else None
            if response is None:
                raise
            return response

    # -- dispatch -------------------------------------------------------------------------------

    def _fast(self, request: Request) -> Response | None:
        """The hot path: a plain GET/HEAD of a cached small file that has not changed.

        Every step is the same as on the general path (`_serve`), only without the detours; None
        means "take the general path", never a different answer.
        """
        method = request.method
        if method != "GET" and method != "HEAD":
            return None
        target = self._targets.get(request.path)
        if target is None:
            missing = self._missing.get(request.path)
            return None if missing is None else self._fast_not_found(request.path, missing)
        if target.trailing:
            return None
        entry = self._files.get(target.fs_path)
        if entry is None or entry.data is None or entry.siblings:
            return None
        headers = request.headers
        if entry.compressible and "accept-encoding" in headers:
            return None  # gzip on the fly: the general path chooses
        if ("range" in headers or "if-none-match" in headers or "if-modified-since" in headers
                or "if-match" in headers or "if-unmodified-since" in headers):
            return None
        try:
            st = os.stat(target.fs_path)
        except OSError:
            return None
        if ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != entry.identity
                or time.monotonic() - entry.checked >= RECHECK):
            return None
        return Response(200, list(entry.headers), entry.data)

    def _fast_not_found(self, raw_path: str, fs_path: str) -> Response | None:
        """A path found missing before and still missing: the 404 the general path would give,
        without raising it through the handler and the worker (None: take the general path)."""
        page = self.not_found
        try:
            os.stat(fs_path)
        except OSError as exc:
            if page is not None and exc.errno in NOT_FOUND_ERRNOS:
                return Response(404, [("Content-Type", "text/html; charset=utf-8")], page)
            return None
        self._missing.discard(raw_path)  # it exists now: the general path describes it
        return None

    def _serve(self, request: Request) -> Response:
        self.prepare(request)
        target = self._targets.get(request.path)
        if target is None:
            target = self._target(request.path)
            try:
                entry = self._lookup(target.fs_path)
            except NotFound:
                self._remember_missing(request.path, target)
                raise
            self._targets.put(request.path, target, cost_of(request.path, target.url_path,
                                                             target.rest, target.fs_path))
        else:
            entry = self._lookup(target.fs_path)
        if entry.is_dir:
            if not target.trailing:
                return self._redirect_to_directory(target, request.query)
            index = self._index(target.fs_path)
            if index is None:
                if request.method == "OPTIONS":
                    return _options()
                if not self.config.autoindex:
                    raise Forbidden("directory listing is off")
                return self._listing(request, target, entry)
            entry = index
        elif target.trailing:
            raise NotFound()  # "/file.txt/" names a directory that does not exist
        if request.method == "OPTIONS":
            return _options()
        return self._file_response(request, entry)

    def _target(self, raw_path: str) -> _Target:
        url_path = normalize(raw_path)
        rest = strip_prefix(url_path, self.prefix)
        if not self.config.dotfiles and hidden(rest):
            raise NotFound()
        trailing = url_path.endswith("/")
        name = rest.rstrip("/")
        return _Target(url_path, rest, self.root + name if name else self.root, trailing)

    def _remember_missing(self, raw_path: str, target: _Target) -> None:
        if self.not_found is not None and not target.trailing:
            self._missing.put(raw_path, target.fs_path, cost_of(raw_path, target.fs_path))

    def _redirect_to_directory(self, target: _Target, query: str) -> Response:
        # A relative reference (RFC 9110 §10.2.2 allows it): the last segment plus "/", so it can
        # never start with "//" (a network-path reference to another host) nor read as a scheme,
        # because ":" is percent-encoded like every other unsafe character.
        segment = target.url_path.rstrip("/").rsplit("/", 1)[-1]
        location = autoindex.href(segment, True) + (f"?{query}" if query else "")
        link = html.escape(location, quote=True)
        body = ("<!DOCTYPE html>\n<title>301 Moved Permanently</title>"
                f'<p>Moved to <a href="{link}">{link}</a>.</p>\n').encode("latin-1")
        return Response(301, [("Location", location), ("Content-Type", "text/html; charset=utf-8")], body)

    def _index(self, directory: str) -> _File | None:
        for name in self.index:
            try:
                entry = self._lookup(os.path.join(directory, name))
            except (NotFound, Forbidden):
                continue
            if not entry.is_dir:
                return entry
        return None

    # -- validation and cache -------------------------------------------------------------------

    def _lookup(self, fs_path: str, coding: str = "") -> _File:
        """The validated facts for a file name (a sibling's when `coding` is given), cached."""
        key = _key(fs_path, coding)
        entry = self._files.get(key)
        try:
            st = os.stat(fs_path)
        except OSError as exc:
            self._files.discard(key)
            raise _os_error(exc) from None
        if (entry is not None and entry.identity == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                and time.monotonic() - entry.checked < RECHECK):
            return entry
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise NotFound()  # FIFOs, sockets and devices are never opened
        fd = _open(fs_path)
        try:
            entry = self._describe(fs_path, fd, os.fstat(fd), coding)
        finally:
            os.close(fd)
        self._remember(key, entry)
        return entry

    def _describe(self, fs_path: str, fd: int, st: os.stat_result, coding: str) -> _File:
        """Validate an opened descriptor and describe it (its content too, when small)."""
        is_dir = stat.S_ISDIR(st.st_mode)
        if not (is_dir or stat.S_ISREG(st.st_mode)):
            raise NotFound()
        if not self.config.symlinks_outside_root:
            self._check_contained(fs_path, fd)
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        entry = _File(fs_path, identity, is_dir, time.monotonic(), coding)
        if is_dir:
            return entry
        entry.size = st.st_size
        # Never a Last-Modified later than the response's Date (RFC 9110 §8.8.2.1).
        entry.mtime = min(int(st.st_mtime), int(time.time()))
        entry.etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}{"-" + coding if coding else ""}"'
        base = fs_path[: -len(_suffix(coding))] if coding else fs_path
        entry.content_type = mime.content_type(base)
        if not coding and self.config.precompressed:
            entry.siblings = tuple(c for c, suffix in SIBLINGS if _is_file(fs_path + suffix))
        entry.compressible = (self.gzip is not None and not coding and not entry.siblings
                              and compress.compressible(entry.content_type, entry.size))
        self._prepare_headers(entry)
        if entry.size <= SMALL_FILE:
            entry.data = _read_all(fd, entry.size)
        return entry

    def _prepare_headers(self, entry: _File) -> None:
        """The fields of a 200 (206 adds Content-Range) and of a 304 (RFC 9110 §15.4.5: validators,
        Vary, Cache-Control; no Content-Type or Content-Encoding)."""
        validators = [("Last-Modified", conditional.http_date(entry.mtime)), ("ETag", entry.etag)]
        if entry.coding or entry.siblings or entry.compressible:
            validators.append(("Vary", "Accept-Encoding"))
        encoding = [("Content-Encoding", entry.coding)] if entry.coding else []
        entry.headers = [("Content-Type", entry.content_type), *encoding, *validators,
                         ("Accept-Ranges", "bytes"), *self.success_headers]
        entry.not_modified = [*validators, *self.success_headers]

    def _check_contained(self, fs_path: str, fd: int) -> None:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")  # the opened file itself: no race
        except OSError:
            real = os.path.realpath(fs_path)
        root = self.root_real
        if not within(root, real):
            raise NotFound()  # a symlink leading out of the root
        if not self.config.dotfiles and hidden(real[len(root.rstrip("/")):]):
            raise NotFound()  # a symlink to a dotfile inside the root

    def _remember(self, key: str, entry: _File) -> None:
        headers = [text for pair in (*entry.headers, *entry.not_modified) for text in pair]
        self._files.put(key, entry, cost_of(key, entry.fs_path, entry.etag, entry.data, *headers))

    # -- files ----------------------------------------------------------------------------------

    def _file_response(self, request: Request, entry: _File) -> Response:
        if entry.siblings:
            coding = negotiate.choose_coding(request.headers.get("accept-encoding"), entry.siblings)
            if coding:
                try:
                    entry = self._lookup(entry.fs_path + _suffix(coding), coding)
                except HTTPError:
                    pass  # the sibling vanished or is refused: the identity representation will do
        elif entry.compressible and self.gzip is not None:
            compressed = self.gzip.respond(request, entry, self._content)
            if compressed is not None:
                return compressed
        headers = request.headers
        spans = None
        if ("range" in headers or "if-none-match" in headers or "if-modified-since" in headers
                or "if-match" in headers or "if-unmodified-since" in headers):
            status = conditional.evaluate_preconditions(request.method, headers, entry.etag, entry.mtime)
            if status == 304:
                return Response(304, list(entry.not_modified))
            if status == 412:
                raise _varying(PreconditionFailed(), entry)
            spans = self._ranges(request, entry)
        if entry.data is not None and spans is None:
            return Response(200, list(entry.headers), entry.data)
        return self._body_response(entry, spans)

    def _ranges(self, request: Request, entry: _File) -> list[conditional.Span] | None:
        """The spans to send, or None for the whole file (RFC 9110 §14.2: Range is for GET only)."""
        value = request.headers.get("range")
        if value is None or request.method != "GET":
            return None
        if_range = request.headers.get("if-range")
        if if_range is not None and not conditional.if_range_allows(
                if_range, entry.etag, entry.mtime, time.time()):
            return None
        spans = conditional.parse_ranges(value, entry.size)
        if spans == []:
            raise _varying(RangeNotSatisfiable(entry.size), entry)
        return spans

    def _body_response(self, entry: _File, spans: list[conditional.Span] | None) -> Response:
        fd = -1
        if entry.data is None:
            fd, entry = self._open_entry(entry)
        cleanup = (lambda: os.close(fd)) if fd >= 0 else None
        try:
            if spans is None:
                body: list[bytes | FileRange] | bytes = (
                    [FileRange(fd, 0, entry.size)] if fd >= 0 else entry.data or b"")
                return Response(200, list(entry.headers), body, entry.size, cleanup=cleanup)
            if len(spans) == 1:
                first, last = spans[0]
                headers = entry.headers + [("Content-Range", f"bytes {first}-{last}/{entry.size}")]
                return Response(206, headers, [self._part(entry, fd, first, last)], last - first + 1,
                                cleanup=cleanup)
            return self._multipart(entry, fd, spans, cleanup)
        except BaseException:
            if cleanup:
                cleanup()
            raise

    def _open_entry(self, entry: _File) -> tuple[int, _File]:
        """Open a described file; if it is no longer the file described, describe what was opened."""
        fd = _open(entry.fs_path)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != entry.identity:
                coding = entry.coding
                entry = self._describe(entry.fs_path, fd, st, coding)
                if entry.is_dir:
                    raise NotFound()
                self._remember(_key(entry.fs_path, coding), entry)
        except BaseException:
            os.close(fd)
            raise
        return fd, entry

    def _content(self, entry: _File) -> tuple[bytes | None, _File]:
        """The whole content of a file and the description of the version read (for gzip)."""
        if entry.data is not None:
            return entry.data, entry
        fd, entry = self._open_entry(entry)
        try:
            return _read_all(fd, entry.size), entry
        finally:
            os.close(fd)

    def _fallback(self, request: Request) -> Response | None:
        """An SPA's page for a path without an extension that matched no file (None: a 404).

        A missing asset ("/assets/app.js") keeps its 404: a browser must not get a page of
        HTML where it asked for a script. The fallback is a file under the route's root.
        """
        try:
            last = normalize(request.path).rstrip("/").rsplit("/", 1)[-1]
            if "." in last or request.method not in ("GET", "HEAD"):
                return None
            name = normalize(self.config.fallback or "/").rstrip("/")
            entry = self._lookup(self.root + name)
        except HTTPError:
            return None
        return None if entry.is_dir else self._file_response(request, entry)

    def _part(self, entry: _File, fd: int, first: int, last: int) -> bytes | FileRange:
        if fd < 0:
            assert entry.data is not None
            return entry.data[first : last + 1]
        return FileRange(fd, first, last - first + 1)

    def _multipart(self, entry: _File, fd: int, spans: list[conditional.Span],
                   cleanup: Callable[[], None] | None) -> Response:
        # multipart/byteranges (RFC 9110 §14.6): each part carries its own Content-Type and
        # Content-Range; the boundary is random so it cannot occur by chance in the content.
        boundary = os.urandom(12).hex()
        parts: list[bytes | FileRange] = []
        length = 0
        for i, (first, last) in enumerate(spans):
            head = (f"{'' if i == 0 else chr(13) + chr(10)}--{boundary}\r\n"
                    f"Content-Type: {entry.content_type}\r\n"
                    f"Content-Range: bytes {first}-{last}/{entry.size}\r\n\r\n").encode("latin-1")
            parts += [head, self._part(entry, fd, first, last)]
            length += len(head) + last - first + 1
        tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
        parts.append(tail)
        length += len(tail)
        headers = [(name, value) for name, value in entry.headers if name != "Content-Type"]
        headers.insert(0, ("Content-Type", f"multipart/byteranges; boundary={boundary}"))
        return Response(206, headers, parts, length, cleanup=cleanup)

    # -- directories ----------------------------------------------------------------------------

    def _listing(self, request: Request, target: _Target, directory: _File) -> Response:
        """The listing of a directory, read through the descriptor that was checked.

        A page kept for the directory the name now leads to (its stat is `directory.identity`)
        is sent as it is. Otherwise the directory is opened and checked (a directory, inside the
        root) and then read only through that descriptor (see `listing`): swapped for a symlink
        after the check, it still lists what was checked.
        """
        as_json = negotiate.prefers_json(request.headers.get("accept"))
        body = self._listings.cached(directory.identity, target.url_path, as_json)
        if body is None:
            body = self._read_listing(target, as_json)
        return Response(200, list(self._listing_headers[as_json]), body)

    def _read_listing(self, target: _Target, as_json: bool) -> bytes:
        fd = _open(target.fs_path, DIRECTORY_FLAGS)
        try:
            if not self.config.symlinks_outside_root:
                self._check_contained(target.fs_path, fd)
            return self._listings.page(fd, os.fstat(fd), target.url_path, target.rest != "/",
                                       as_json)
        except OSError as exc:
            raise _os_error(exc) from None
        finally:
            os.close(fd)

    # -- error pages ----------------------------------------------------------------------------

    def _error_page(self, page: str, error: HTTPError) -> Response | None:
        """The configured page for an error status, served with that status; None if unusable."""
        try:
            name = normalize("/" + page.lstrip("/")).rstrip("/")
            entry = self._lookup(self.root + name)
            if entry.is_dir:
                return None
            if entry.data is not None:
                body: bytes | list[bytes | FileRange] = entry.data
                cleanup = None
            else:
                fd, entry = self._open_entry(entry)
                body, cleanup = [FileRange(fd, 0, entry.size)], (lambda: os.close(fd))
        except HTTPError:
            return None
        headers = list(error.headers) + [("Content-Type", entry.content_type)]
        return Response(error.status, headers, body, entry.size, close=error.close, cleanup=cleanup)


def _options() -> Response:
    return Response(204, [("Allow", ALLOW)])


def _varying(error: HTTPError, entry: _File) -> HTTPError:
    """An error about a file that has precompressed siblings still says what it varies on."""
    if entry.coding or entry.siblings:
        error.headers.append(("Vary", "Accept-Encoding"))
    return error


def _key(fs_path: str, coding: str) -> str:
    # A file name never contains NUL, so a sibling's key cannot collide with a file's.
    return f"{fs_path}\0{coding}" if coding else fs_path


def _suffix(coding: str) -> str:
    return dict(SIBLINGS)[coding]


def _open(fs_path: str, flags: int = OPEN_FLAGS) -> int:
    try:
        return os.open(fs_path, flags)
    except OSError as exc:
        raise _os_error(exc) from None


def _is_file(fs_path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(fs_path).st_mode)
    except OSError:
        return False


def _read_all(fd: int, size: int) -> bytes | None:
    """The whole content of a small file, or None if it changed size while being read."""
    data = os.pread(fd, size + 1, 0)
    return data if len(data) == size else None


def _os_error(exc: OSError) -> HTTPError:
    if exc.errno in NOT_FOUND_ERRNOS:
        return NotFound()
    if exc.errno in DENIED_ERRNOS:
        return Forbidden()
    if exc.errno in OVERLOAD_ERRNOS:
        return ServiceUnavailable(f"{exc.strerror}", [("Retry-After", "1")])
    return InternalError(f"{exc.strerror}")
