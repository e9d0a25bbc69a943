"""The API. Every write commits, as app code usually does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .database import engine, get_session
from .models import Base, Category, Item
from .schemas import CategoryIn, CategoryOut, ItemIn, ItemOut, ItemPatch, Stats


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    Base.metadata.create_all(engine)
    yield


app = FastAPI(title="Shop", lifespan=lifespan)
SessionDep = Annotated[Session, Depends(get_session)]


def _commit(session: Session, what: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status_code=409, detail=f"{what} already exists") from None


@app.post("/categories/", status_code=201, response_model=CategoryOut)
def create_category(body: CategoryIn, session: SessionDep) -> Category:
    category = Category(name=body.name)
    session.add(category)
    _commit(session, "category")
    return category


@app.post("/items/", status_code=201, response_model=ItemOut)
def create_item(body: ItemIn, session: SessionDep) -> Item:
    item = Item(**body.model_dump())
    session.add(item)
    _commit(session, "item")
    return item


@app.get("/items/", response_model=list[ItemOut])
def list_items(session: SessionDep, in_stock: bool | None = None) -> list[Item]:
    query = select(Item).order_by(Item.id)
    if in_stock is not None:
        query = query.where(Item.in_stock.is_(in_stock))
    return list(session.scalars(query))


@app.get("/items/{item_id}", response_model=ItemOut)
def read_item(item_id: int, session: SessionDep) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="item not found")
    return item


@app.patch("/items/{item_id}", response_model=ItemOut)
def update_item(item_id: int, body: ItemPatch, session: SessionDep) -> Item:
    item = read_item(item_id, session)
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(item, field, value)
    session.commit()
    return item


@app.delete("/items/{item_id}", status_code=204)
def delete_item(item_id: int, session: SessionDep) -> None:
    session.delete(read_item(item_id, session))
    session.commit()


@app.get("/stats", response_model=Stats)
def stats(session: SessionDep) -> Stats:
    count, total = session.execute(select(func.count(Item.id), func.sum(Item.price))).one()
    return Stats(items=count, stock_value=total or 0.0)
