"""A Pyramid 2 app for the wsgi route tests: a route URL built from the request (so the mount
prefix shows), a JSON view, a POST that redirects, and a 404 from the framework."""

from __future__ import annotations

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.request import Request
from pyramid.response import Response


def home(request: Request) -> Response:
    return Response(f'<a href="{request.route_path("item", name="x")}">item</a>')


def item(request: Request) -> dict[str, str]:
    return {"name": request.matchdict["name"], "url": request.route_url("item", name="y")}


def submit(request: Request) -> HTTPFound:
    return HTTPFound(location=request.route_path("item", name=request.POST["name"]))


with Configurator() as config:
    config.add_route("home", "/")
    config.add_route("item", "/items/{name}")
    config.add_route("submit", "/submit")
    config.add_view(home, route_name="home")
    config.add_view(item, route_name="item", renderer="json")
    config.add_view(submit, route_name="submit", request_method="POST")
    application = config.make_wsgi_app()
