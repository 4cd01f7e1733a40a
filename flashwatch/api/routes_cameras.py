"""Cameras: CRUD and status. Writes need the operator role, reads the viewer role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlmodel import Session, col, select

from flashwatch import registry
from flashwatch.api.deps import (
    IdPath,
    OperatorDep,
    SessionDep,
    StateDep,
    ViewerDep,
    page_size,
    reject_unknown_query,
)
from flashwatch.api.errors import not_found, responses
from flashwatch.api.schemas import (
    CameraCreate,
    CameraPage,
    CameraPublic,
    CameraStatusPublic,
    CameraUpdate,
)
from flashwatch.db.models import Camera
from flashwatch.security import camera_policy

router = APIRouter(
    prefix="/v1/cameras",
    tags=["cameras"],
    responses=responses(400, 401, 403, 422),
    dependencies=[Depends(reject_unknown_query)],
)


def _get(session: Session, camera_id: int) -> Camera:
    cam = session.get(Camera, camera_id)
    if cam is None:
        raise not_found("camera", camera_id)
    return cam


@router.post("", status_code=201, response_model=CameraPublic, responses=responses(409, 413))
def create_camera(
    body: CameraCreate, session: SessionDep, state: StateDep, _: OperatorDep
) -> CameraPublic:
    cam = registry.create_camera(session, body, camera_policy(state.settings.ingest))
    assert cam.id is not None
    return registry.camera_public(cam, registry.has_credentials(session, cam.id))


@router.get("", response_model=CameraPage)
def list_cameras(
    session: SessionDep,
    state: StateDep,
    _: ViewerDep,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> CameraPage:
    size = page_size(state, limit)
    after = registry.decode_cursor(cursor)
    stmt = select(Camera).order_by(col(Camera.id)).limit(size + 1)
    if after is not None:
        stmt = stmt.where(col(Camera.id) > after)
    rows = list(session.exec(stmt).all())
    more = len(rows) > size
    rows = rows[:size]
    items = [registry.camera_public(c, registry.has_credentials(session, c.id or 0)) for c in rows]
    next_cursor = registry.encode_cursor(rows[-1].id or 0) if more and rows else None
    return CameraPage(items=items, next_cursor=next_cursor)


@router.get("/{camera_id}", response_model=CameraPublic, responses=responses(404))
def get_camera(camera_id: IdPath, session: SessionDep, _: ViewerDep) -> CameraPublic:
    cam = _get(session, camera_id)
    return registry.camera_public(cam, registry.has_credentials(session, camera_id))


@router.get("/{camera_id}/status", response_model=CameraStatusPublic, responses=responses(404))
def get_camera_status(camera_id: IdPath, session: SessionDep, _: ViewerDep) -> CameraStatusPublic:
    return registry.camera_status(_get(session, camera_id))


@router.patch("/{camera_id}", response_model=CameraPublic, responses=responses(404, 409, 413))
def update_camera(
    camera_id: IdPath, body: CameraUpdate, session: SessionDep, state: StateDep, _: OperatorDep
) -> CameraPublic:
    cam = _get(session, camera_id)
    cam = registry.update_camera(session, cam, body, camera_policy(state.settings.ingest))
    return registry.camera_public(cam, registry.has_credentials(session, camera_id))


@router.delete("/{camera_id}", status_code=204, responses=responses(404))
def delete_camera(
    camera_id: IdPath, session: SessionDep, state: StateDep, _: OperatorDep
) -> Response:
    cam = _get(session, camera_id)
    registry.delete_camera(session, cam)
    if state.memory is not None:
        state.memory.delete_camera(camera_id)
    return Response(status_code=204)
