"""The generation backend interface of the simulation server, and a helper shared by backends."""

from __future__ import annotations

from abc import ABC, abstractmethod

from zerosearch.simulation.sampling import GenerationRequest, GenerationResult


class GenerationBackend(ABC):
    """Completes a batch of tokenized prompts. Called from one worker thread at a time.

    Attributes:
        tokenizer: the Hugging Face tokenizer of the served model (chat template, encode/decode).
        name: backend name for /get_server_info.
    """

    name: str = "base"
    tokenizer = None

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order."""

    def close(self) -> None:
        """Release the model."""


def earliest_stop(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """Position and value of the stop string that occurs first in ``text`` (ties: the longer one)."""
    best: tuple[int, str] | None = None
    for stop in stops:
        pos = text.find(stop)
        if pos >= 0 and (best is None or pos < best[0] or (pos == best[0] and len(stop) > len(best[1]))):
            best = (pos, stop)
    return best
