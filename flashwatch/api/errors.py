"""One error shape for every non-2xx answer, and the handlers that produce it.

Validation errors name the field and the limit but never echo the submitted value: a
rejected body may hold a camera password.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from flashwatch.api.schemas import ErrorResponse, FieldError

log = logging.getLogger("flashwatch.api")


class ApiError(Exception):
    """An expected failure with a status, a stable code and a message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors = errors or []
        self.headers = headers


def field_error(field: str, message: str, status: int = 422) -> ApiError:
    return ApiError(
        status,
        "validation_error",
        f"{field}: {message}",
        errors=[FieldError(field=field, message=message)],
    )


def not_found(what: str, ident: int) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} does not exist")


def _body(code: str, message: str, errors: list[FieldError] | None = None) -> dict[str, Any]:
    return ErrorResponse(code=code, message=message, errors=errors or []).model_dump()


def _loc(loc: tuple[Any, ...]) -> str:
    # Drop pydantic's union-branch tags such as "function-after[...]" from the location.
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and "[" in p))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            _body(exc.code, exc.message, exc.errors), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(field=_loc(tuple(e.get("loc", ()))), message=_message(e))
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        return JSONResponse(_body("validation_error", summary, errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = (
            HTTPStatus(exc.status_code).phrase
            if exc.status_code in HTTPStatus._value2member_map_
            else "error"
        )
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        message = exc.detail if isinstance(exc.detail, str) else phrase
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(_body(code, message), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(_body("internal_error", "internal server error"), status_code=500)


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route serves on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    methods.discard("HEAD")
    return sorted(methods)


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return "unknown or read-only field"
    return msg


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries documenting ErrorResponse for these statuses."""
    return {s: {"model": ErrorResponse, "description": HTTPStatus(s).phrase} for s in statuses}
