"""What the API reads and writes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class CategoryIn(BaseModel):
    name: str


class CategoryOut(CategoryIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class ItemIn(BaseModel):
    name: str
    price: float
    category_id: int | None = None


class ItemPatch(BaseModel):
    price: float | None = None
    in_stock: bool | None = None


class ItemOut(ItemIn):
    model_config = ConfigDict(from_attributes=True)

    id: int
    in_stock: bool


class Stats(BaseModel):
    items: int
    stock_value: float
