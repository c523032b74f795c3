"""forkd: a prefork HTTP/1.1 daemon serving static files and CGI."""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"forkd/{__version__}"
