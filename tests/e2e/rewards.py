"""Scoring functions for engine tests: deterministic functions of the text with spread across samples."""


def vowel_share(data_source, solution_str, ground_truth, extra_info=None):
    """Share of characters of the response that are vowels (a smooth, learnable signal in [0, 1])."""
    text = solution_str or ""
    if not text:
        return 0.0
    return sum(c in "aeiou" for c in text.lower()) / len(text)
