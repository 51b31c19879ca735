"""Every API router, in the order they are mounted under /api/v2."""

from __future__ import annotations

from fastapi import APIRouter


def all_routers() -> list[APIRouter]:
    return []
