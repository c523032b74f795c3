from django.urls import path

from django_site import views

urlpatterns = [
    path("", views.index, name="index"),
    path("form/", views.form, name="form"),
    path("done/", views.done, name="done"),
    path("upload/", views.upload, name="upload"),
    path("stream/", views.stream, name="stream"),
    path("hi/", views.hi, name="hi"),
]
