"""A plugin whose Config has one field of every kind the form must render, validate and round-trip."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from scheduler_app import JobPlugin, RunContext, hookimpl


class Color(StrEnum):
    red = "red"
    green = "green"


class Endpoint(BaseModel):
    """Where to connect."""

    host: str = Field("localhost", min_length=1)
    port: int = Field(8080, ge=1, le=65535)


class Item(BaseModel):
    name: str = Field(..., min_length=1)
    qty: int = Field(1, ge=1)


class Config(BaseModel):
    word: str = Field("hello", min_length=2, max_length=10, pattern=r"^[a-z]+$", description="Lowercase word")
    count: int = Field(5, ge=0, le=10)
    ratio: float = Field(0.5, ge=0, le=1)
    flag: bool = True
    must: bool
    mode: Literal["fast", "slow"] = "fast"
    color: Color = Color.red
    maybe_color: Color | None = None
    note: str | None = None
    limit: int | None = None
    endpoint: Endpoint = Field(default_factory=Endpoint)
    tags: list[str] = Field(default_factory=lambda: ["x"])
    numbers: list[int] = [1, 2]
    items: list[Item] = Field(default_factory=list)
    token: SecretStr = SecretStr("")
    labels: dict[str, str] = Field(default_factory=dict)


class Plugin(JobPlugin):
    Config = Config
    title = "Every kind"
    description = "Has one field of every kind."

    @hookimpl
    async def run(self, config: Config, context: RunContext) -> None:
        context.logger.info("word=%s count=%d", config.word, config.count)
