"""Media types of static files, from a fixed table.

The table is built into forkd on purpose: the stdlib `mimetypes` module also reads the host's
/etc/mime.types, so the same site would be served with different Content-Types on different machines.
Text-like types get `; charset=utf-8` (RFC 9110 §8.3.2), because a browser left to guess the charset of a
UTF-8 file guesses windows-1252, and a guessing browser is also a content-sniffing risk.
"""

from __future__ import annotations

import os

DEFAULT_TYPE = "application/octet-stream"

# Extension (lower case, without the dot) → media type. The common web types, plus a few that
# download tools and package formats need to be right about.
TYPES: dict[str, str] = {
    # text
    "html": "text/html", "htm": "text/html", "shtml": "text/html", "xhtml": "application/xhtml+xml",
    "css": "text/css", "csv": "text/csv", "txt": "text/plain", "text": "text/plain", "log": "text/plain",
    "md": "text/markdown", "markdown": "text/markdown", "ics": "text/calendar", "vtt": "text/vtt",
    "xml": "application/xml", "xsl": "application/xml", "rss": "application/rss+xml",
    "atom": "application/atom+xml", "yaml": "application/yaml", "yml": "application/yaml",
    "toml": "application/toml",
    # scripts and data
    "js": "application/javascript", "mjs": "application/javascript", "cjs": "application/javascript",
    "json": "application/json", "map": "application/json", "jsonld": "application/ld+json",
    "webmanifest": "application/manifest+json", "wasm": "application/wasm",
    # images
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
    "webp": "image/webp", "avif": "image/avif", "svg": "image/svg+xml", "svgz": "image/svg+xml",
    "ico": "image/vnd.microsoft.icon", "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff",
    "apng": "image/apng", "jxl": "image/jxl",
    # fonts
    "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
    "eot": "application/vnd.ms-fontobject",
    # audio and video
    "mp3": "audio/mpeg", "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg",
    "wav": "audio/wav", "flac": "audio/flac", "m4a": "audio/mp4", "aac": "audio/aac",
    "mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "ogv": "video/ogg",
    "mov": "video/quicktime", "avi": "video/x-msvideo", "mkv": "video/x-matroska",
    "m3u8": "application/vnd.apple.mpegurl", "mpd": "application/dash+xml",
    # documents and archives
    "pdf": "application/pdf", "rtf": "application/rtf", "epub": "application/epub+zip",
    "zip": "application/zip", "gz": "application/gzip", "tgz": "application/gzip",
    "bz2": "application/x-bzip2", "xz": "application/x-xz", "zst": "application/zstd",
    "tar": "application/x-tar", "7z": "application/x-7z-compressed", "br": "application/octet-stream",
    "deb": "application/vnd.debian.binary-package", "rpm": "application/x-rpm",
    "jar": "application/java-archive", "whl": "application/zip", "iso": "application/x-iso9660-image",
    "doc": "application/msword", "xls": "application/vnd.ms-excel",
    "ppt": "application/vnd.ms-powerpoint",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "bin": "application/octet-stream", "exe": "application/octet-stream",
}

# Types that are text though not text/*: they get a charset too.
TEXT_LIKE = frozenset({
    "application/javascript", "application/json", "image/svg+xml", "application/xml",
    "application/xhtml+xml", "application/rss+xml", "application/atom+xml", "application/ld+json",
    "application/manifest+json", "application/yaml", "application/toml",
})


def media_type(name: str) -> str:
    """The bare media type for a file name ("a.JS" → "application/javascript")."""
    ext = os.path.splitext(name)[1]
    return TYPES.get(ext[1:].lower(), DEFAULT_TYPE) if ext else DEFAULT_TYPE


def content_type(name: str) -> str:
    """The Content-Type field value for a file name, with a charset for text."""
    return with_charset(media_type(name))


def with_charset(mtype: str) -> str:
    if mtype.startswith("text/") or mtype in TEXT_LIKE:
        return mtype + "; charset=utf-8"
    return mtype
