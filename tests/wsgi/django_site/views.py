"""Views of the test project: a CSRF-protected form with a redirect and a session, an upload,
a streamed response; every link built with reverse(), so the mount prefix must be honoured."""

from __future__ import annotations

import hashlib
import time

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f'<a href="{reverse("form")}">form</a>')


def form(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        request.session["name"] = request.POST["name"]
        return HttpResponseRedirect(reverse("done"))
    token = get_token(request)
    return HttpResponse(f'<form method="post" action="{reverse("form")}">'
                        f'<input type="hidden" name="csrfmiddlewaretoken" value="{token}">'
                        '<input name="name"></form>')


def done(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"thanks {request.session.get('name', 'nobody')}")


@csrf_exempt
def upload(request: HttpRequest) -> JsonResponse:
    sent = request.FILES["file"]
    data = sent.read()
    return JsonResponse({"name": sent.name, "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def parts():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"part {i}\n"
            time.sleep(0.2)
    return StreamingHttpResponse(parts(), content_type="text/plain")


def hi(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello, World!", content_type="text/plain")
