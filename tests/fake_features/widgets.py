"""A working optional feature, for the registry tests."""

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/widgets")
started_with: list[object] = []


@router.get("")
async def list_widgets() -> dict:
    return {"widgets": ["sprocket"]}


@router.post("/{widget_id}/spin")
async def spin(widget_id: str) -> dict:
    return {"spun": widget_id}


def init(app, settings) -> None:
    started_with.append(settings)


def init_that_fails(app, settings) -> None:
    raise RuntimeError("could not reach the widget service")
