"""The HTTP/1.1 protocol engine: parsing, body framing and response serialisation. No sockets here."""
