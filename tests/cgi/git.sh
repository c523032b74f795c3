#!/bin/sh
# Smart HTTP for git: the route's env gives GIT_PROJECT_ROOT and GIT_HTTP_EXPORT_ALL.
exec git http-backend
