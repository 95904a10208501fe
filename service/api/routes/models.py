"""GET /models and /models/{name}: what each served model is (its card, shape, range, device)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ..deps import RegistryDep
from ..registry import ModelEntry
from ..schemas import ModelCard, ModelList, problem_responses

router = APIRouter(tags=["models"])


def model_card(entry: ModelEntry) -> ModelCard:
    """The card as served: stored fields plus what the server derived (range, device, ordering)."""
    card = entry.card
    can_complete = (
        entry.shape is not None and entry.shared_ordering and entry.known_rows_prefix_ok(entry.shape[0] // 2)
    )
    return ModelCard(
        name=entry.name,
        description=card.get("description"),
        shape=list(entry.shape) if entry.shape else None,
        data_dim=entry.data_dim,
        value_range=list(entry.value_range),
        binary=entry.binary,
        device=entry.device,
        ready=bool(entry.engine.running),
        architecture=card.get("config", {}),
        ordering=entry.ordering_info(),
        completion={
            "supported": bool(can_complete),
            "default_known_rows": entry.shape[0] // 2 if can_complete and entry.shape else None,
        },
        data=card.get("data"),
        metrics=card.get("metrics"),
        card=card,
    )


@router.get(
    "/models", summary="List the served models", response_model=ModelList, responses=problem_responses(401)
)
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(
        default_model=registry.settings.default_model,
        models=[model_card(e) for e in registry.entries.values()],
        failed=dict(registry.failed),
    )


@router.get(
    "/models/{name}",
    summary="One model's card",
    response_model=ModelCard,
    responses=problem_responses(401, 404),
)
async def get_model(
    name: Annotated[str, Path(examples=["mnist"], description="Model name.")], registry: RegistryDep
) -> ModelCard:
    return model_card(registry.get(name))
